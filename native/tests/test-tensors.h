// test-tensors.h — what the op tests share to hand host arrays to a backend.
#pragma once
#include "backend.h"
#include "tensor.h"

#include <memory>
#include <string>
#include <vector>

namespace shoal_test {

// A view of host memory as a checkpoint tensor (what the loader would hand a backend).
inline shoal::TensorView view(const std::string & name, shoal::DType dt, std::vector<int64_t> shape, const void * data,
                              size_t nbytes) {
    shoal::TensorView v;
    v.name = name;
    v.dtype = dt;
    v.n_dims = (int)shape.size();
    for (size_t i = 0; i < shape.size(); i++) v.shape[i] = shape[i];
    v.data = data;
    v.nbytes = nbytes;
    return v;
}

// A backend under test and its name in messages ("cpu/avx2", "cuda").
struct Bk {
    std::string name;
    std::unique_ptr<shoal::Backend> b;
};

} // namespace shoal_test
