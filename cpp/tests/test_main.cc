#include <gtest/gtest.h>

#include "millstream/dataset.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!millstream::Initialize().ok()) return 1;
  return RUN_ALL_TESTS();
}
