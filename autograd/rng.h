// rng.h: the one mixer every module draws random numbers from (splitmix64's finaliser and
// stream), so that a seed means the same thing in init, data order, dropout and sampling.
#pragma once
#include <stdint.h>

// A bijective scramble of z: counter-based streams use ag_mix64(key + i).
static inline uint64_t ag_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The next value of the splitmix64 stream whose state is *s.
static inline uint64_t ag_splitmix64(uint64_t *s) {
    return ag_mix64(*s += 0x9e3779b97f4a7c15ull);
}
