"""Pipeline stage 2: the `model` a client asked for → the configured model, if this key may use it."""

from gateway.auth.keys import Principal
from gateway.errors import ModelNotAllowed, NotFound
from gateway.pipeline import RequestContext
from gateway.settings import ModelConfig, Settings


class ResolveModel:
    def __init__(self, settings: Settings) -> None:
        self.models = {m.name: m for m in settings.models}

    async def __call__(self, ctx: RequestContext) -> None:
        assert ctx.principal is not None
        ctx.model = self.resolve(ctx.principal, ctx.body["model"])

    def resolve(self, principal: Principal, name: str) -> ModelConfig:
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"The model '{name}' does not exist.", param="model", code="model_not_found")
        if not principal.may_use(name):
            raise ModelNotAllowed(f"This API key may not use the model '{name}'.", param="model")
        return model

    def visible(self, principal: Principal) -> list[ModelConfig]:
        return [m for m in self.models.values() if principal.may_use(m.name)]
