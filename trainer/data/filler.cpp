// Filler sentences from small word lists and the length fitting of haystack
// prompts: estimate per sentence, then correct with whole-prompt counts.
#include "trainer/data/filler.h"

#include <fmt/format.h>

#include <algorithm>

#include "absl/status/status.h"
#include "engine/common/check.h"
#include "engine/model/tokenizer.h"
#include "trainer/data/random.h"

namespace lagserve::trainer {
namespace {

// NOTE: no word here may hint at the needles (key, number, code, digit,
// magic, vault, secret) and none contains a digit.
constexpr const char* kNames[] = {"Mara", "Tomas", "Elena", "Oskar", "Lina",  "Felix",
                                  "Ada",  "Bruno", "Clara", "Hugo",  "Iris",  "Jonas",
                                  "Nora", "Pavel", "Rosa",  "Simon", "Greta", "Anton"};
constexpr const char* kPeople[] = {"fisherman", "baker",    "traveler", "teacher", "merchant",
                                   "farmer",    "sailor",   "child",    "painter", "shepherd",
                                   "gardener",  "poet",     "soldier",  "miller",  "weaver",
                                   "innkeeper", "musician", "carpenter"};
constexpr const char* kGroups[] = {"villagers", "farmers",   "travelers", "children",
                                   "merchants", "sailors",   "neighbors", "students",
                                   "pilgrims",  "musicians", "shepherds", "fishermen"};
constexpr const char* kGroupsCap[] = {"Villagers", "Farmers",   "Travelers", "Children",
                                      "Merchants", "Sailors",   "Neighbors", "Students",
                                      "Pilgrims",  "Musicians", "Shepherds", "Fishermen"};
constexpr const char* kAdjectives[] = {"old",     "quiet",    "small",    "bright",  "narrow",
                                       "gentle",  "tired",    "curious",  "distant", "heavy",
                                       "careful", "cheerful", "silent",   "ancient", "busy",
                                       "pale",    "clever",   "stubborn", "humble",  "restless"};
constexpr const char* kStates[] = {"empty", "calm",     "crowded", "cold",  "warm",
                                   "still", "peaceful", "noisy",   "dark",  "golden",
                                   "muddy", "fragrant", "bare",    "green", "gloomy"};
constexpr const char* kWeather[] = {"grey", "windy", "rainy", "sunny", "misty", "chilly", "humid"};
constexpr const char* kTimesOfDay[] = {"morning", "evening", "night", "afternoon", "day"};
constexpr const char* kStorms[] = {"storm", "rain", "fog", "snow", "wind", "frost", "heat"};
constexpr const char* kIntransitive[] = {
    "waited",   "rested", "wandered", "paused",  "slept",  "laughed",  "listened", "lingered",
    "stumbled", "hummed", "smiled",   "watched", "sighed", "shivered", "returned", "hesitated"};
constexpr const char* kTransitive[] = {"painted", "repaired", "carried",  "cleaned", "sold",
                                       "found",   "borrowed", "polished", "opened",  "described",
                                       "noticed", "built",    "mended",   "wrapped", "admired"};
constexpr const char* kPlural[] = {"talk",  "gather", "argue",   "sing",   "laugh",
                                   "trade", "dance",  "whisper", "stroll", "rest"};
constexpr const char* kAdverbs[] = {"quietly",   "loudly",  "slowly", "happily",
                                    "patiently", "eagerly", "softly", "carelessly"};
constexpr const char* kObjects[] = {"fence", "basket", "lantern", "boat",   "wagon",
                                    "table", "letter", "blanket", "window", "drum",
                                    "coat",  "map",    "kettle",  "saddle", "ladder"};
constexpr const char* kPlaces[] = {"market",  "garden",    "village", "harbor", "library",
                                   "orchard", "courtyard", "meadow",  "valley", "kitchen",
                                   "chapel",  "bakery",    "square",  "forest", "mill"};
constexpr const char* kWhere[] = {
    "near the harbor",         "beside the old well",       "under the oak tree",
    "across the wide river",   "behind the mill",           "along the dusty road",
    "inside the small chapel", "at the edge of the forest", "on the hill above the town",
    "by the frozen lake",      "in the crowded square",     "outside the bakery"};
constexpr const char* kWhen[] = {
    "before dawn",         "after supper",           "on a rainy afternoon",
    "late in the evening", "during the long winter", "at midday",
    "early in the spring", "the next morning",       "while the bells rang",
    "as the sun went down"};
constexpr const char* kSeasons[] = {"in the summer", "every autumn", "through the winter",
                                    "in early spring", "after the harvest"};

// A name different from `other`.
const char* other_name(std::mt19937_64& rng, const char* other) {
  const char* name = pick(rng, kNames);
  return name == other ? kNames[(std::find(std::begin(kNames), std::end(kNames), other) -
                                 std::begin(kNames) + 1) %
                                std::size(kNames)]
                       : name;
}

std::string assemble(const Haystack& haystack, const std::vector<std::string>& filler,
                     const std::vector<double>& depths) {
  // Needle k goes before filler sentence floor(depth * (n + 1)), in depth order.
  std::vector<size_t> order(haystack.needles.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return depths[a] < depths[b]; });
  std::string body;
  const auto add = [&body](const std::string& sentence) {
    if (!body.empty()) body += ' ';
    body += sentence;
  };
  size_t next = 0;
  for (size_t i = 0; i <= filler.size(); ++i) {
    while (
        next < order.size() &&
        std::min(static_cast<size_t>(depths[order[next]] * static_cast<double>(filler.size() + 1)),
                 filler.size()) <= i) {
      add(haystack.needles[order[next++]]);
    }
    if (i < filler.size()) add(filler[i]);
  }
  return fmt::format("{}\n\n{}\n\n{}", haystack.intro, body, haystack.question);
}

}  // namespace

std::string filler_sentence(std::mt19937_64& rng) {
  switch (uniform_below(rng, 10)) {
    case 0:
      return fmt::format("The {} {} {} {}.", pick(rng, kAdjectives), pick(rng, kPeople),
                         pick(rng, kIntransitive), pick(rng, kWhere));
    case 1:
      return fmt::format("{} {} the {} {} {}.", pick(rng, kNames), pick(rng, kTransitive),
                         pick(rng, kAdjectives), pick(rng, kObjects), pick(rng, kWhen));
    case 2:
      return fmt::format("{} {} {} in the {}.", pick(rng, kGroupsCap), pick(rng, kPlural),
                         pick(rng, kAdverbs), pick(rng, kPlaces));
    case 3:
      return fmt::format("It was a {} {}, and the {} was {}.", pick(rng, kWeather),
                         pick(rng, kTimesOfDay), pick(rng, kPlaces), pick(rng, kStates));
    case 4: {
      const char* first = pick(rng, kNames);
      return fmt::format("{} and {} {} a {} {} {}.", first, other_name(rng, first),
                         pick(rng, kTransitive), pick(rng, kAdjectives), pick(rng, kObjects),
                         pick(rng, kWhere));
    }
    case 5:
      return fmt::format("According to the {}, the {} is {} {}.", pick(rng, kGroups),
                         pick(rng, kPlaces), pick(rng, kStates), pick(rng, kSeasons));
    case 6:
      return fmt::format("In the {}, a {} {} {} {}.", pick(rng, kPlaces), pick(rng, kAdjectives),
                         pick(rng, kPeople), pick(rng, kIntransitive), pick(rng, kAdverbs));
    case 7:
      return fmt::format("The {} that {} {} {} was {}.", pick(rng, kObjects), pick(rng, kNames),
                         pick(rng, kTransitive), pick(rng, kWhen), pick(rng, kAdjectives));
    case 8:
      return fmt::format("When the {} came, the {} {} {}.", pick(rng, kStorms), pick(rng, kGroups),
                         pick(rng, kIntransitive), pick(rng, kWhere));
    default:
      return fmt::format("{} thought that the {} looked {} {}.", pick(rng, kNames),
                         pick(rng, kPlaces), pick(rng, kStates), pick(rng, kWhen));
  }
}

std::string short_filler_sentence(std::mt19937_64& rng) {
  switch (uniform_below(rng, 3)) {
    case 0:
      return fmt::format("{} {}.", pick(rng, kNames), pick(rng, kIntransitive));
    case 1:
      return fmt::format("The {} {}.", pick(rng, kPeople), pick(rng, kIntransitive));
    default:
      return fmt::format("It was {}.", pick(rng, kStates));
  }
}

absl::StatusOr<std::string> fit_haystack(const Haystack& haystack, int32_t length_tokens,
                                         int32_t tolerance, const model::Tokenizer& tok,
                                         std::mt19937_64& rng) {
  LAGSERVE_CHECK(tolerance >= 8, "fit_haystack needs tolerance >= 8, got {}", tolerance);
  std::vector<double> depths;
  for (size_t k = 0; k < haystack.needles.size(); ++k) depths.push_back(uniform_unit(rng));
  std::vector<std::string> filler;
  std::vector<int64_t> estimates;  // tokens of " " + sentence, one per filler sentence
  const auto count = [&] {
    return static_cast<int64_t>(
        tok.encode(assemble(haystack, filler, depths), tok.add_bos_default()).size());
  };
  const auto estimate = [&](const std::string& sentence) {
    return static_cast<int64_t>(tok.encode(" " + sentence, /*add_bos=*/false).size());
  };
  // Adds sentences while their estimates fit in `budget` tokens: long ones
  // first, then a few tries with short ones for the last gap.
  const auto add_filler = [&](int64_t budget) {
    for (std::string s = filler_sentence(rng);; s = filler_sentence(rng)) {
      const int64_t e = estimate(s);
      if (e > budget) break;
      filler.push_back(std::move(s));
      estimates.push_back(e);
      budget -= e;
    }
    for (int attempt = 0; attempt < 8 && budget > 0; ++attempt) {
      std::string s = short_filler_sentence(rng);
      const int64_t e = estimate(s);
      if (e > budget) continue;
      filler.push_back(std::move(s));
      estimates.push_back(e);
      budget -= e;
    }
    // Small vocabularies spend many tokens per sentence: close the gap with
    // one-word sentences.
    static constexpr const char* kTiny[] = {"Yes.", "Indeed.", "Fine.", "Right.", "So."};
    for (int attempt = 0; attempt < 16 && budget > 0; ++attempt) {
      std::string s = kTiny[uniform_below(rng, std::size(kTiny))];
      const int64_t e = estimate(s);
      if (e > budget) continue;
      filler.push_back(std::move(s));
      estimates.push_back(e);
      budget -= e;
    }
  };

  const int64_t fixed = count();
  if (fixed > length_tokens) {
    return absl::InvalidArgumentError(
        fmt::format("length_tokens {} is too small: the task's fixed text alone takes {} tokens",
                    length_tokens, fixed));
  }
  const int64_t lo = length_tokens - tolerance;
  const int64_t aim = length_tokens - tolerance / 2;
  int64_t actual = fixed;
  for (int round = 0; round < 16; ++round) {
    if (actual >= lo && actual <= length_tokens) return assemble(haystack, filler, depths);
    const int64_t delta = aim - actual;
    if (delta > 0) {
      add_filler(delta);
    } else {
      for (int64_t removed = 0; removed < -delta && !filler.empty();) {
        removed += estimates.back();
        filler.pop_back();
        estimates.pop_back();
      }
    }
    actual = count();
  }
  return absl::InternalError(
      fmt::format("could not fit a haystack prompt into [{}, {}] tokens (last try: {})", lo,
                  length_tokens, actual));
}

}  // namespace lagserve::trainer
