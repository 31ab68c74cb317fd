// Architecture probe: reports which compiled image of sparsekit._C the driver picked for a device.
//
// The extension is built for several targets (sm_80 for Ampere mma.sp, sm_90a for Hopper wgmma).
// The driver loads the SASS that matches the device, or JIT-compiles embedded PTX when none does;
// __CUDA_ARCH__ inside a kernel is the only ground truth of which image actually runs, so the
// dispatcher can refuse an arch-specific fast path whose image is not the one executing.
#include <cuda_runtime.h>

#include "probe.h"

namespace {

__global__ void arch_probe_kernel(int* out) {
#ifdef __CUDA_ARCH__
  *out = __CUDA_ARCH__;
#endif
}

}  // namespace

cudaError_t sparsekit_launch_arch_probe(int* out_device_ptr, cudaStream_t stream) {
  arch_probe_kernel<<<1, 1, 0, stream>>>(out_device_ptr);
  return cudaGetLastError();
}
