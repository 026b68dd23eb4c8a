// The gRPC edge: the lagserve.v1.LagServe service (sync API, one handler
// thread per call) over ServingCore, the standard health service, and the
// server's lifetime. Protobuf <-> struct translation lives in grpc_convert.cpp.
#include "server/grpc_service.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <cstddef>
#include <mutex>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lagserve/v1/lagserve.grpc.pb.h"
#include "server/api_key.h"
#include "server/grpc_convert.h"
#include "server/serving.h"

namespace lagserve::server {

namespace {

constexpr std::chrono::milliseconds kPollInterval{50};  // how soon a cancelled call notices
constexpr int kMaxReceiveBytes = 16 << 20;

// absl and gRPC share the canonical code numbers.
grpc::Status to_grpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(status.code())),
                      std::string(status.message()));
}

// The status of a call that the client cancelled or whose deadline passed
// (the client sees its own view of it; this is what the handler returns).
grpc::Status ended_early(const grpc::ServerContext& context) {
  if (context.deadline() <= std::chrono::system_clock::now()) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
}

// An output with nothing for the client (no text, token or finish) is not sent.
bool carries_nothing(const runtime::RequestOutput& out) {
  return out.text.empty() && out.tokens.empty() && out.logprobs.empty() && !out.finished();
}

std::string listen_address(const std::string& host, int port) {
  const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';  // so non-empty
  return ipv6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

class LagServeService final : public v1::LagServe::Service {
 public:
  LagServeService(ServingCore& core, const std::optional<std::string>& api_key) : core_(core) {
    if (api_key) expected_authorization_ = absl::StrCat("Bearer ", *api_key);
  }

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context, const v1::DetokenizeRequest* request,
                          v1::DetokenizeResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;

 private:
  // What every method checks first: the API key, the server state, the model name.
  grpc::Status admit(const grpc::ServerContext& context, const std::string& model) const;
  bool authorized(const grpc::ServerContext& context) const;
  // Streams a started call's outputs, then the usage message.
  grpc::Status stream(Generation& generation, grpc::ServerContext& context,
                      grpc::ServerWriter<v1::GenerateResponse>& writer);

  ServingCore& core_;
  std::optional<std::string> expected_authorization_;  // "Bearer <key>"
};

bool LagServeService::authorized(const grpc::ServerContext& context) const {
  if (!expected_authorization_) return true;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return false;
  return constant_time_equal(std::string_view(it->second.data(), it->second.size()),
                             *expected_authorization_);
}

grpc::Status LagServeService::admit(const grpc::ServerContext& context,
                                    const std::string& model) const {
  if (!authorized(context)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid API key");
  }
  switch (core_.state()) {
    case ServerState::Loading:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is loading");
    case ServerState::Draining:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is draining");
    case ServerState::Ready:
      break;
  }
  if (!model.empty() && model != core_.model_name()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("model '", model, "' does not exist"));
  }
  return grpc::Status::OK;
}

grpc::Status LagServeService::Generate(grpc::ServerContext* context,
                                       const v1::GenerateRequest* request,
                                       grpc::ServerWriter<v1::GenerateResponse>* writer) {
  if (grpc::Status admitted = admit(*context, request->model()); !admitted.ok()) return admitted;
  if (context->IsCancelled()) return ended_early(*context);
  absl::StatusOr<GenerateCall> call = generate_call_from_proto(*request);
  if (!call.ok()) return to_grpc(call.status());
  absl::StatusOr<std::unique_ptr<Generation>> generation = core_.generate(*std::move(call));
  if (!generation.ok()) return to_grpc(generation.status());
  // NOTE: every early return below destroys the Generation, which cancels the
  // choices still running, so their KV blocks go back at the next engine step.
  return stream(**generation, *context, *writer);
}

grpc::Status LagServeService::stream(Generation& generation, grpc::ServerContext& context,
                                     grpc::ServerWriter<v1::GenerateResponse>& writer) {
  std::vector<int32_t> n_output(generation.n_choices(), 0);  // latest count per choice
  for (;;) {
    if (context.IsCancelled()) {
      generation.cancel();
      return ended_early(context);
    }
    runtime::RequestOutput out;
    int32_t choice = 0;
    const Generation::Poll poll = generation.next_for(kPollInterval, &out, &choice);
    if (generation.timed_out()) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          absl::StrCat("the request ran longer than the server's limit of ",
                                       generation.timeout_s(),
                                       " s (--request-timeout) and was cancelled"));
    }
    if (poll == Generation::Poll::Done) break;
    if (poll == Generation::Poll::Timeout) continue;

    n_output[choice] = out.n_output;
    if (out.finish == runtime::FinishReason::Abort && !out.error.empty()) {
      generation.cancel();
      return grpc::Status(grpc::StatusCode::INTERNAL, out.error);
    }
    if (carries_nothing(out)) continue;
    v1::GenerateResponse response;
    response.set_request_id(generation.id());
    output_to_proto(out, choice, core_, &response);
    if (!writer.Write(response)) {  // the call is over: cancelled, deadline, or connection lost
      generation.cancel();
      return ended_early(context);
    }
  }

  int64_t completion_tokens = 0;
  for (int32_t n : n_output) completion_tokens += n;
  const int64_t prompt_tokens = generation.n_prompt_total();
  v1::GenerateResponse last;
  last.set_request_id(generation.id());
  v1::Usage* usage = last.mutable_usage();
  usage->set_prompt_tokens(static_cast<uint32_t>(prompt_tokens));
  usage->set_completion_tokens(static_cast<uint32_t>(completion_tokens));
  usage->set_total_tokens(static_cast<uint32_t>(prompt_tokens + completion_tokens));
  if (!writer.Write(last)) return ended_early(context);
  return grpc::Status::OK;
}

grpc::Status LagServeService::Tokenize(grpc::ServerContext* context,
                                       const v1::TokenizeRequest* request,
                                       v1::TokenizeResponse* response) {
  if (grpc::Status admitted = admit(*context, request->model()); !admitted.ok()) return admitted;
  absl::StatusOr<PromptInput> prompt = tokenize_prompt_from_proto(*request);
  if (!prompt.ok()) return to_grpc(prompt.status());
  std::optional<bool> add_special;
  if (request->has_add_special_tokens()) add_special = request->add_special_tokens();
  absl::StatusOr<std::vector<int32_t>> ids = core_.tokenize(*prompt, add_special);
  if (!ids.ok()) return to_grpc(ids.status());
  response->mutable_token_ids()->Add(ids->begin(), ids->end());
  response->set_count(static_cast<uint32_t>(ids->size()));
  response->set_max_model_len(static_cast<uint32_t>(core_.max_model_len()));
  return grpc::Status::OK;
}

grpc::Status LagServeService::Detokenize(grpc::ServerContext* context,
                                         const v1::DetokenizeRequest* request,
                                         v1::DetokenizeResponse* response) {
  if (grpc::Status admitted = admit(*context, request->model()); !admitted.ok()) return admitted;
  const auto& ids = request->token_ids();
  absl::StatusOr<std::string> text =
      core_.detokenize(std::span<const int32_t>(ids.data(), static_cast<size_t>(ids.size())));
  if (!text.ok()) return to_grpc(text.status());
  // NOTE: ids may end inside a character; proto3 strings must be valid UTF-8.
  response->set_text(valid_utf8(*std::move(text)));
  return grpc::Status::OK;
}

grpc::Status LagServeService::ListModels(grpc::ServerContext* context,
                                         const v1::ListModelsRequest* /*request*/,
                                         v1::ListModelsResponse* response) {
  if (grpc::Status admitted = admit(*context, ""); !admitted.ok()) return admitted;
  v1::Model* model = response->add_models();
  model->set_id(core_.model_name());
  model->set_max_model_len(static_cast<uint32_t>(core_.max_model_len()));
  model->set_lagkv(core_.default_policy().to_string());
  return grpc::Status::OK;
}

}  // namespace

struct GrpcServer::Impl {
  // Declared before `server` so that it outlives it.
  std::unique_ptr<LagServeService> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::mutex shutdown_mu;
  bool shut_down = false;
};

bool GrpcServer::built_in() { return true; }

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcServer::~GrpcServer() { shutdown(std::chrono::system_clock::now()); }

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::start(ServingCore& core,
                                                              const GrpcOptions& options) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("gRPC port ", options.port, " is outside [0, 65535]"));
  }
  const std::string address = listen_address(options.host, options.port);
  auto impl = std::make_unique<Impl>();
  impl->service = std::make_unique<LagServeService>(core, options.api_key);

  grpc::EnableDefaultHealthCheckService(true);  // process-wide; read by BuildAndStart
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &impl->port);
  builder.RegisterService(impl->service.get());
  builder.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  // NOTE: gRPC sets SO_REUSEPORT by default on Linux, so a second server on a
  // busy port would "bind" and share it instead of failing.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  impl->server = builder.BuildAndStart();
  if (impl->server == nullptr || impl->port == 0) {
    if (impl->server != nullptr) impl->server->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", address,
                     " (address in use, or not an address of this host)"));
  }

  std::unique_ptr<GrpcServer> server(new GrpcServer(std::move(impl)));
  server->set_serving(core.state() == ServerState::Ready);
  return server;
}

int GrpcServer::port() const { return impl_->port; }

void GrpcServer::set_serving(bool serving) {
  grpc::HealthCheckServiceInterface* health = impl_->server->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", serving);
  health->SetServingStatus(v1::LagServe::service_full_name(), serving);
}

void GrpcServer::shutdown(std::chrono::system_clock::time_point deadline) {
  std::lock_guard<std::mutex> lock(impl_->shutdown_mu);
  if (impl_->shut_down) return;
  impl_->shut_down = true;
  impl_->server->Shutdown(deadline);  // cancels what still runs at the deadline
  impl_->server->Wait();
}

}  // namespace lagserve::server
