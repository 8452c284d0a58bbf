"""How fact derivers register: each declares the facts (from pack.facts) it returns."""

from __future__ import annotations

from collections.abc import Callable

from fhir_adapter.pack.context import Context, Fact
from fhir_adapter.pack.facts import FACTS
from fhir_adapter.pack.load import Pack

FactFn = Callable[[Pack, Context], tuple[Fact, ...]]


class Derivers:
    """Fact derivers in registration order; a deriver may read the facts derived before it."""

    def __init__(self) -> None:
        self.order: dict[FactFn, tuple[str, ...]] = {}

    def names(self) -> list[str]:
        return [name for names in self.order.values() for name in names]

    def provides(self, *names: str) -> Callable[[FactFn], FactFn]:
        """Register a deriver for the facts it returns, in this order."""

        def register(fn: FactFn) -> FactFn:
            for name in names:
                if name not in FACTS:
                    raise RuntimeError(f"fact {name!r} is not declared in fhir_adapter.pack.facts")
                if name in self.names():
                    raise RuntimeError(f"fact {name!r} is derived twice")
            self.order[fn] = names
            return fn

        return register

    def derive(self, pack: Pack, ctx: Context) -> None:
        for fn, names in self.order.items():
            ctx.facts.update(zip(names, fn(pack, ctx), strict=True))
