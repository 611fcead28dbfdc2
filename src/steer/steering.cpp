// Steering vectors: layer selections, the delta they add, applicability checks.
#include "kvsteer/steering.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <tuple>

#include "kvsteer/error.h"

namespace kvsteer {

bool LayerSelection::contains(std::int32_t il) const {
  if (!layers.empty()) {
    return std::find(layers.begin(), layers.end(), il) != layers.end();
  }
  return il >= min_layer;
}

namespace {

std::int32_t parse_layer(const std::string& text, const std::string& whole) {
  std::size_t used = 0;
  long value = -1;
  try {
    value = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || value < 0 || value > 100000) {
    throw Error(ErrorCode::InvalidArgument,
                "layer selection '" + whole + "': '" + text +
                    "' is not a layer index; use e.g. '1-' (layers >= 1), '3,5,7', '2-6', 'all' "
                    "or 'none'");
  }
  return static_cast<std::int32_t>(value);
}

// c * row, refused when the row holds a non-finite value (a vector built in memory; files with
// one are refused when loaded) or the product overflows float, before anything reaches a cache.
std::vector<float> scaled_row(const std::vector<float>& row, float c, char half, std::int32_t il) {
  std::vector<float> out(row.size());
  float largest = 0.0f;
  for (std::size_t i = 0; i < row.size(); ++i) {
    if (!std::isfinite(row[i])) {
      throw Error(ErrorCode::InvalidArgument,
                  std::string("steering vector S_") + half + " of layer " + std::to_string(il) +
                      " holds " + std::to_string(row[i]) + " at index " + std::to_string(i) +
                      " (not finite); nothing was written");
    }
    largest = std::max(largest, std::fabs(row[i]));
    out[i] = c * row[i];
  }
  if (!std::isfinite(c * largest)) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "c_%c = %g times |S_%c| up to %g", half, static_cast<double>(c),
                  half, static_cast<double>(largest));
    throw Error(ErrorCode::InvalidArgument, std::string("steering delta of layer ") +
                                                std::to_string(il) + " overflows float (" + buf +
                                                "); nothing was written");
  }
  return out;
}

}  // namespace

LayerSelection LayerSelection::parse(const std::string& text) {
  LayerSelection sel;
  if (text == "all") {
    sel.min_layer = 0;
    return sel;
  }
  if (text == "none") {
    sel.min_layer = INT32_MAX;
    return sel;
  }
  if (!text.empty() && text.back() == '-' && text.find(',') == std::string::npos) {
    sel.min_layer = parse_layer(text.substr(0, text.size() - 1), text);
    return sel;
  }
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    const auto dash = part.find('-');
    if (dash == std::string::npos) {
      sel.layers.push_back(parse_layer(part, text));
      continue;
    }
    const auto lo = parse_layer(part.substr(0, dash), text);
    const auto hi = parse_layer(part.substr(dash + 1), text);
    if (hi < lo) {
      std::string message = "layer selection '" + text;
      message += "': range " + part;
      message += " is empty";
      throw Error(ErrorCode::InvalidArgument, message);
    }
    for (auto il = lo; il <= hi; ++il) {
      sel.layers.push_back(il);
    }
  }
  if (sel.layers.empty()) {
    throw Error(ErrorCode::InvalidArgument, "layer selection '" + text + "' names no layer");
  }
  std::sort(sel.layers.begin(), sel.layers.end());
  sel.layers.erase(std::unique(sel.layers.begin(), sel.layers.end()), sel.layers.end());
  return sel;
}

std::string LayerSelection::to_string() const {
  if (layers.empty()) {
    if (min_layer == 0) {
      return "all";
    }
    if (min_layer == INT32_MAX) {
      return "none";
    }
    return std::to_string(min_layer) + "-";
  }
  std::string out;
  for (auto il : layers) {
    out += (out.empty() ? "" : ",") + std::to_string(il);
  }
  return out;
}

void check_layers(const SteeringParams& params, std::int32_t n_layer) {
  const std::string layers =
      std::to_string(n_layer) + " layers (0.." + std::to_string(n_layer - 1) + ")";
  for (const auto& [sel, coef, half] : {std::tuple{&params.layers_k, params.coef_k, "K"},
                                        std::tuple{&params.layers_v, params.coef_v, "V"}}) {
    for (auto il : sel->layers) {
      if (il >= n_layer) {
        throw Error(ErrorCode::InvalidArgument,
                    "layer " + std::to_string(il) + " does not exist: the model has " + layers);
      }
    }
    const bool none_on_purpose = sel->layers.empty() && sel->min_layer == INT32_MAX;
    if (coef != 0.0f && sel->layers.empty() && sel->min_layer >= n_layer && !none_on_purpose) {
      throw Error(ErrorCode::InvalidArgument, std::string("the ") + half + " layer selection '" +
                                                  sel->to_string() +
                                                  "' selects no layer: the model has " + layers);
    }
  }
}

CellDelta steering_delta(const SteeringVector& vector, const SteeringParams& params) {
  if (!std::isfinite(params.coef_k) || !std::isfinite(params.coef_v)) {
    throw Error(ErrorCode::InvalidArgument,
                "steering coefficients must be finite, got c_k = " + std::to_string(params.coef_k) +
                    ", c_v = " + std::to_string(params.coef_v));
  }
  const auto n_layer = static_cast<std::int32_t>(vector.k.size());
  check_layers(params, n_layer);
  CellDelta delta;
  delta.k.resize(vector.k.size());
  delta.v.resize(vector.v.size());
  for (std::int32_t il = 0; il < n_layer; ++il) {
    if (params.layers_k.contains(il) && params.coef_k != 0.0f) {
      delta.k[il] = scaled_row(vector.k[il], params.coef_k, 'k', il);
    }
    if (il < static_cast<std::int32_t>(vector.v.size()) && params.layers_v.contains(il) &&
        params.coef_v != 0.0f) {
      delta.v[il] = scaled_row(vector.v[il], params.coef_v, 'v', il);
    }
  }
  return delta;
}

void check_applicable(const SteeringVector& vector, const Session& session) {
  const std::string m = vector.model.mismatch(session.model().fingerprint());
  if (!m.empty()) {
    throw Error(ErrorCode::Format, "steering vector was made for another model: " + m);
  }
  if (vector.info.k_rotated != session.k_rotated()) {
    throw Error(ErrorCode::Format,
                std::string("steering vector keys were extracted from a ") +
                    (vector.info.k_rotated ? "Hadamard-rotated (quantized)" : "plain") +
                    " K cache, but this session's K cache (" +
                    kv_type_name(session.params().type_k) + ") is " +
                    (session.k_rotated() ? "rotated" : "plain") +
                    "; extract and apply with the same kind of K cache type");
  }
}

}  // namespace kvsteer
