// Python module asr_kd._C. Importing it registers the operators of ops.cpp (torch.ops.asr_kd.*);
// the module itself only exposes build information. Not part of the CMake library (no Python).
#include <torch/extension.h>

#include "frame_kd.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "asr_kd native extension: operators are registered under torch.ops.asr_kd";
  m.def("with_cuda", &asr_kd::with_cuda, "True when the CUDA kernels were compiled in.");
}
