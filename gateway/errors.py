"""One error hierarchy for everything the gateway refuses or fails to do.

Each error carries the HTTP status, the OpenAI error `type` and `code`, and renders itself as OpenAI's
error body, so the official SDKs raise the matching exception class:

    GatewayError
     ├── InvalidRequest            400  invalid_request_error
     │    ├── InvalidJSON          400  invalid_json
     │    └── PolicyViolation      400  policy_violation     (names the policy and rule; see gateway.policy)
     ├── AuthenticationFailed      401  invalid_api_key
     ├── ModelNotAllowed           403  model_not_allowed
     ├── NotFound                  404  not_found / model_not_found
     ├── MethodNotAllowed          405  method_not_allowed
     ├── RequestTimeout            408  request_timeout      (client sent its body too slowly)
     ├── PayloadTooLarge           413  payload_too_large
     ├── HeadersTooLarge           431  request_header_fields_too_large
     ├── RateLimited               429  rate_limit_exceeded  (a policy's RPM, TPM or concurrency limit; Retry-After)
     ├── BudgetExceeded            429  budget_exceeded      (a policy's spend budget; x-should-retry: false)
     ├── InternalError             500  internal_error       (a bug: logged, never shown)
     ├── UpstreamUnreachable       502  upstream_unreachable
     ├── NoDeploymentAvailable     503  no_deployment_available (breakers open, health checks failing, all busy)
     ├── AuditUnavailable          503  audit_unavailable    (the audit spool is full and the policy is fail_closed)
     ├── LimitsUnavailable         503  limits_unavailable   (Redis is unreachable and the rule is fail_closed)
     ├── PiiUnavailable            503  pii_unavailable      (the PII analyzer failed and the rule is fail_closed)
     └── UpstreamTimeout           504  upstream_timeout

An upstream's own 4xx/5xx is not a GatewayError: its status and body are passed through as they are.
An error may carry response headers (`headers`), such as Retry-After on a 429.
"""

from typing import Any

from gateway import codec


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def render(self) -> bytes:
        return codec.dumps(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class PolicyViolation(InvalidRequest):
    """A policy rule blocked the request (or the answer); the body names the policy and the rule."""

    code = "policy_violation"

    def __init__(self, message: str, *, policy: str, rule: str) -> None:
        super().__init__(message)
        self.policy = policy
        self.rule = rule

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"].update(policy=self.policy, rule=self.rule)
        return body


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ModelNotAllowed(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class Limited(GatewayError):
    """Refused by a rate limit or a budget rule: the body names the policy and the rule."""

    status = 429

    def __init__(self, message: str, *, policy: str, rule: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.policy = policy
        self.rule = rule
        self.headers = headers

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"].update(policy=self.policy, rule=self.rule)
        return body


class RateLimited(Limited):
    type = "requests"
    code = "rate_limit_exceeded"


class BudgetExceeded(Limited):
    type = "budget_exceeded"
    code = "budget_exceeded"


class InternalError(GatewayError):
    pass


class UpstreamUnreachable(GatewayError):
    status = 502
    type = "server_error"
    code = "upstream_unreachable"


class NoDeploymentAvailable(GatewayError):
    status = 503
    type = "server_error"
    code = "no_deployment_available"


class AuditUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "audit_unavailable"


class LimitsUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "limits_unavailable"


class PiiUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "pii_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "server_error"
    code = "upstream_timeout"
