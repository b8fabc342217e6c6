// backend.c: device -> backend lookup.
#include "backend.h"

#include "error.h"

const ag_backend *ag_backend_for(ag_device device) {
    switch (device) {
    case AG_CPU:
        return &ag_cpu_backend;
    case AG_CUDA:
#ifdef GROUNDC_HAVE_CUDA
        return &ag_cuda_backend;
#else
        ag_fail("this groundc was built without CUDA");
#endif
    }
    ag_fail("unknown device %d", (int)device);
}

#ifndef GROUNDC_HAVE_CUDA
bool ag_cuda_available(void) {
    return false;
}
#endif
