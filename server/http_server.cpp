// HttpServer: routes (models, tokenize, detokenize, health, metrics, the two
// completion endpoints), the API key check, the body limit and error bodies.
#include "server/http_server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include "server/api_key.h"
#include "server/http_util.h"
#include "server/serving.h"

namespace lagserve::server {
namespace {

using nlohmann::json;

void write_json(httplib::Response& res, const json& body) {
  res.status = 200;
  res.set_content(dump_json(body), "application/json");
}

std::optional<json> parse_object(const httplib::Request& req, httplib::Response& res) {
  json doc = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    write_error(res, {400, "the request body must be a JSON object", "invalid_request_error", "", ""});
    return std::nullopt;
  }
  return doc;
}

bool ready_or_503(const ServingCore& core, httplib::Response& res) {
  if (core.state() == ServerState::Ready) return true;
  write_error(res, api_error(absl::UnavailableError(core.state() == ServerState::Loading
                                                        ? "the server is loading"
                                                        : "the server is shutting down")));
  return false;
}

void handle_tokenize(ServingCore& core, const httplib::Request& req, httplib::Response& res) {
  if (!ready_or_503(core, res)) return;
  std::optional<json> body = parse_object(req, res);
  if (!body) return;
  PromptInput prompt;
  std::optional<bool> add_special;
  try {
    if (auto e = check_model(core, body->value("model", std::string()))) return write_error(res, *e);
    if (body->contains("messages")) {
      std::variant<OpenAiCall, ApiError> call = parse_openai_request(req.body, /*chat=*/true);
      if (auto* e = std::get_if<ApiError>(&call)) return write_error(res, *e);
      prompt = std::get<OpenAiCall>(call).call.prompts.at(0);
    } else if (body->contains("prompt") && (*body)["prompt"].is_string()) {
      prompt.text = (*body)["prompt"].get<std::string>();
    } else {
      return write_error(res, {400, "prompt (a string) or messages is required",
                               "invalid_request_error", "prompt", ""});
    }
    if (body->contains("add_special_tokens")) add_special = (*body)["add_special_tokens"].get<bool>();
  } catch (const json::exception& e) {
    return write_error(res, {400, fmt::format("invalid request: {}", e.what()),
                             "invalid_request_error", "", ""});
  }
  absl::StatusOr<std::vector<int32_t>> ids = core.tokenize(prompt, add_special);
  if (!ids.ok()) return write_error(res, api_error(ids.status()));
  write_json(res, {{"count", ids->size()}, {"max_model_len", core.max_model_len()}, {"tokens", *ids}});
}

void handle_detokenize(ServingCore& core, const httplib::Request& req, httplib::Response& res) {
  if (!ready_or_503(core, res)) return;
  std::optional<json> body = parse_object(req, res);
  if (!body) return;
  std::vector<int32_t> ids;
  const json& tokens = (*body)["tokens"];
  if (!tokens.is_array()) {
    return write_error(res, {400, "tokens must be a list of token ids", "invalid_request_error",
                             "tokens", ""});
  }
  for (const json& t : tokens) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
      return write_error(res, {400, "tokens must be a list of token ids", "invalid_request_error",
                               "tokens", ""});
    }
    ids.push_back(t.get<int32_t>());
  }
  absl::StatusOr<std::string> text = core.detokenize(ids);
  if (!text.ok()) {
    ApiError e = api_error(text.status());
    e.param = "tokens";
    return write_error(res, e);
  }
  write_json(res, {{"prompt", *text}});
}

json model_card(const ServingCore& core) {
  return {{"id", core.model_name()},         {"object", "model"},
          {"created", core.created_unix()},  {"owned_by", "lagserve"},
          {"root", core.model_name()},       {"max_model_len", core.max_model_len()},
          {"lagkv", core.default_policy().to_string()}};
}

}  // namespace

HttpServer::HttpServer(ServingCore& core, HttpOptions options)
    : core_(core), options_(std::move(options)), server_(std::make_unique<httplib::Server>()) {
  const int n_threads = options_.n_threads;
  server_->new_task_queue = [n_threads] { return new httplib::ThreadPool(n_threads); };
  server_->set_payload_max_length(options_.max_body_bytes);
  // Remember the listening socket: bind() raises its backlog.
  server_->set_socket_options([this](int sock) {
    httplib::default_socket_options(sock);
    listen_fd_ = sock;
  });
  server_->set_read_timeout(std::chrono::seconds(30));
  server_->set_write_timeout(std::chrono::seconds(30));
  add_routes();
}

HttpServer::~HttpServer() { stop(); }

absl::Status HttpServer::bind() {
  if (options_.port == 0) {
    port_ = server_->bind_to_any_port(options_.host);
    if (port_ < 0) port_ = 0;
  } else if (server_->bind_to_port(options_.host, options_.port)) {
    port_ = options_.port;
  }
  // NOTE: cpp-httplib 0.11 listens with a backlog of 5. A burst of clients
  // (a benchmark's 64 requests at once) against busy cores overflows it and
  // connections get reset before their request is read; listen() again
  // with the system's maximum raises it.
  if (port_ > 0 && listen_fd_ >= 0) ::listen(listen_fd_, SOMAXCONN);
  if (port_ <= 0) {
    return absl::UnavailableError(
        fmt::format("cannot listen on {}:{} (in use, or not a local address)", options_.host,
                    options_.port));
  }
  return absl::OkStatus();
}

void HttpServer::start() {
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

void HttpServer::stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpServer::add_routes() {
  httplib::Server& s = *server_;
  ServingCore& core = core_;
  if (options_.api_key) {
    const std::string expected = "Bearer " + *options_.api_key;
    s.set_pre_routing_handler([expected](const httplib::Request& req, httplib::Response& res) {
      if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      if (constant_time_equal(req.get_header_value("Authorization"), expected)) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      write_error(res, {401, "invalid or missing API key (Authorization: Bearer <key>)",
                        "authentication_error", "", "invalid_api_key"});
      return httplib::Server::HandlerResponse::Handled;
    });
  }
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler already wrote its error
    switch (res.status) {
      case 404:
        write_error(res, {404, fmt::format("no route for {} {}", req.method, req.path),
                          "not_found_error", "", ""});
        break;
      case 413:
        write_error(res, {413, "the request body is larger than the server accepts",
                          "invalid_request_error", "", "body_too_large"});
        break;
      default:
        write_error(res, {res.status, fmt::format("HTTP {}", res.status),
                          res.status >= 500 ? "server_error" : "invalid_request_error", "", ""});
    }
  });
  s.set_exception_handler([](const httplib::Request& req, httplib::Response& res,
                             std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("{} {}: {}", req.method, req.path, what);
    write_error(res, {500, "internal error", "server_error", "", ""});
  });

  s.Get("/health", [&core](const httplib::Request&, httplib::Response& res) {
    if (!ready_or_503(core, res)) return;
    res.set_content("{}", "application/json");
  });
  s.Get("/metrics", [&core](const httplib::Request&, httplib::Response& res) {
    res.set_content(core.metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
  });
  s.Get("/v1/models", [&core](const httplib::Request&, httplib::Response& res) {
    if (!ready_or_503(core, res)) return;
    write_json(res, {{"object", "list"}, {"data", json::array({model_card(core)})}});
  });
  s.Get(R"(/v1/models/(.+))", [&core](const httplib::Request& req, httplib::Response& res) {
    if (!ready_or_503(core, res)) return;
    if (auto e = check_model(core, req.matches[1].str())) return write_error(res, *e);
    write_json(res, model_card(core));
  });
  s.Post("/tokenize", [&core](const httplib::Request& req, httplib::Response& res) {
    handle_tokenize(core, req, res);
  });
  s.Post("/detokenize", [&core](const httplib::Request& req, httplib::Response& res) {
    handle_detokenize(core, req, res);
  });
  s.Post("/v1/completions", [&core](const httplib::Request& req, httplib::Response& res) {
    handle_completion(core, req, res, /*chat=*/false);
  });
  s.Post("/v1/chat/completions", [&core](const httplib::Request& req, httplib::Response& res) {
    handle_completion(core, req, res, /*chat=*/true);
  });
}

}  // namespace lagserve::server
