#pragma once
#include <cuda_runtime.h>

// Writes __CUDA_ARCH__ of the running image (e.g. 800, 900) to *out_device_ptr (one int on the device).
cudaError_t sparsekit_launch_arch_probe(int* out_device_ptr, cudaStream_t stream);
