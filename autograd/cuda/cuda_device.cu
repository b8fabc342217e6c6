// cuda_device.cu: which GPU this process uses (ag_cuda_select, backend.h). One process per
// GPU: a rank picks its GPU from its node-local rank before it allocates anything on a device,
// so that every CUDA allocation, kernel and library handle of the process lands on it.
#include <stdio.h>

#include "autograd/cuda/cuda_common.cuh"

extern "C" int ag_cuda_select(int index, char *name, size_t cap) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n < 1)
        ag_fail("no usable CUDA device (%s)",
                err != cudaSuccess ? cudaGetErrorString(err) : "none visible");
    if (index < 0) index = 0;
    int dev = index % n;
    // Called before the first allocation; the same choice again (each stage of a
    // curriculum) is harmless.
    CUDA_CHECK(cudaSetDevice(dev));
    if (name && cap) {
        cudaDeviceProp prop;
        CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
        snprintf(name, cap, "%s", prop.name);
    }
    return dev;
}
