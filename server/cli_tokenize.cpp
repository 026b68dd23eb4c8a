// `lagserve tokenize`: print the ids of a text as a JSON array.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "engine/model/model.h"
#include "server/cli.h"

namespace lagserve::cli {

int run_tokenize(const TokenizeArgs& args) {
  auto model = model::load_model(args.model, {.weights = false});
  if (!model.ok()) {
    fmt::print(stderr, "lagserve: error: {}\n", std::string(model.status().message()));
    return 1;
  }
  const auto& tok = *(*model)->tokenizer;
  const auto ids = tok.encode(args.text, args.add_bos || tok.add_bos_default());
  fmt::print("[{}]\n", fmt::join(ids, ", "));
  return 0;
}

}  // namespace lagserve::cli
