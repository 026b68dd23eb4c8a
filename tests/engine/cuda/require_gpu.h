// The CUDA backend's tests skip cleanly on a machine without a GPU.
#pragma once

#include <gtest/gtest.h>

#include "engine/backend/cuda/cuda_backend.h"

#define REQUIRE_GPU()                                                                   \
  do {                                                                                  \
    if (!::lagserve::backend::cuda_available()) GTEST_SKIP() << "no CUDA device";       \
  } while (0)
