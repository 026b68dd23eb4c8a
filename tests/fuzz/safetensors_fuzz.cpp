// Fuzzes the safetensors reader. First byte even: the rest is one
// .safetensors file (header length, JSON header, data), and every tensor that
// opens is converted to fp32. Odd: the rest is a model.safetensors.index.json
// beside the two real shards of tests/golden/models/tiny-qwen2.
// Run: scripts/fuzz.sh 600 safetensors
#include <cstdint>
#include <filesystem>
#include <vector>

#include "engine/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

using namespace lagserve;
namespace fs = std::filesystem;

namespace {

// scratch_dir()/sharded holds the two shards (copied once) and the index.
const std::string& sharded_dir() {
  static const std::string dir = [] {
    const fs::path d = fuzz::scratch_dir() + "/sharded";
    fs::create_directories(d);
    const fs::path src = fs::path(LAGSERVE_SOURCE_DIR) / "tests/golden/models/tiny-qwen2";
    for (const char* shard : {"model-00001-of-00002.safetensors",
                              "model-00002-of-00002.safetensors"}) {
      fs::copy_file(src / shard, d / shard, fs::copy_options::overwrite_existing);
    }
    return d.string();
  }();
  return dir;
}

void convert_all(const model::SafetensorsModel& m) {
  std::vector<float> buf;
  for (const model::StTensor& t : m.tensors()) {
    buf.resize(static_cast<size_t>(t.n_elements()));
    model::st_to_f32(t, buf.data());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest = fuzz::as_view(data + 1, size - 1);
  if ((data[0] & 1) == 0) {
    auto m = model::SafetensorsModel::open_file(fuzz::write_scratch("model.safetensors", rest));
    if (m.ok()) convert_all(**m);
  } else {
    const std::string& dir = sharded_dir();
    fuzz::write_scratch("sharded/model.safetensors.index.json", rest);
    auto m = model::SafetensorsModel::open_dir(dir);
    if (m.ok()) convert_all(**m);
  }
  return 0;
}
