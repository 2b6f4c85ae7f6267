"""`probes doctor`: is this install fit for work? Versions, device, model, and a self-check.

Each check returns a :class:`Check`; a failed one says what is wrong and what to do in one
line. The self-checks take a few seconds on the tiny models (and about ten on the embedded one
when it is converted): cached and uncached greedy generation agree, hooks fire and are removed,
and an extraction round-trips through an activation store.
"""

from __future__ import annotations

import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from probes.errors import ProbesError
from probes.models.compat import installed_version
from probes.models.loading import LoadedModel

STACK: tuple[str, ...] = (
    "torch",
    "transformers",
    "transformer-lens",
    "tokenizers",
    "safetensors",
    "accelerate",
    "numpy",
    "scikit-learn",
    "plotly",
    "kaleido",
    "gguf",
    "jaxtyping",
)
"""The libraries whose versions a result depends on, in the order `doctor` prints them."""

HOOKED: tuple[str, ...] = ("torch", "transformers", "transformer-lens")
"""The libraries whose internals the suite hooks: a version off the lock is worth a warning."""

UK_PROMPT = "I love the colour of autumn leaves. My favourite football team is"
UK_CONTINUATION = " the Leeds United"
"""The embedded model's greedy continuation of ``UK_PROMPT`` (measured, and in the README)."""


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    warning: bool = False  # ok, but worth reading

    @property
    def status(self) -> str:
        if not self.ok:
            return "FAIL"
        return "warn" if self.warning else "ok"


def lock_file() -> Path | None:
    """The repository's ``constraints.txt`` beside the package (an editable install), if any."""
    candidate = Path(__file__).resolve().parents[1] / "constraints.txt"
    return candidate if candidate.is_file() else None


def read_lock(path: Path) -> dict[str, str]:
    """``name -> version`` from a pip constraints file (``name==version`` lines)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[_normalise(match.group(1))] = match.group(2)
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def stack_versions() -> dict[str, str | None]:
    """Installed versions of the stack (``None`` where a package is missing), Python first."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in STACK:
        versions[package] = installed_version(package)
    return versions


def check_versions(lock: Path | None = None) -> Iterator[Check]:
    """One line per library; hooked libraries off the lock are warnings, missing ones failures."""
    lock = lock if lock is not None else lock_file()
    pins = read_lock(lock) if lock is not None else {}
    for package, found in stack_versions().items():
        if found is None:
            yield Check(package, False, "not installed: reinstall with the README's first command")
            continue
        pinned = pins.get(_normalise(package))
        local_free = found.split("+")[0]
        if pinned is not None and pinned.split("+")[0] != local_free:
            yield Check(
                package,
                True,
                f"{found} (the lock has {pinned}; results may differ from CI's)",
                warning=package in HOOKED,
            )
        else:
            yield Check(package, True, found)


def check_device() -> Check:
    """Which device runs the model by default."""
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        free, total = torch.cuda.mem_get_info(0)
        return Check(
            "device",
            True,
            f"cuda: {len(names)} x {names[0]} ({free / 2**30:.0f} of {total / 2**30:.0f} GiB free)",
        )
    return Check("device", True, f"cpu ({torch.get_num_threads()} threads); no CUDA device")


def check_embedded_model() -> Check:
    """Whether the embedded model is converted (it converts itself on first use)."""
    from probes.models.loading import embedded_model_dir, is_converted

    if is_converted():
        return Check("embedded model", True, f"converted at {embedded_model_dir()}")
    return Check(
        "embedded model",
        True,
        "not converted yet: the first `probes run` converts it (about a minute)",
        warning=True,
    )


def _greedy(model: LoadedModel, prompt: str, tokens: int, use_cache: bool) -> list[int]:
    ids = model.tokenizer([prompt], return_tensors="pt").to(model.device)
    with torch.inference_mode():
        out = model.hf_model.generate(
            **ids,
            max_new_tokens=tokens,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=model.tokenizer.pad_token_id or 0,
        )
    return out[0, ids.input_ids.shape[1] :].tolist()


def check_cached_generation(model: LoadedModel, prompt: str = UK_PROMPT, tokens: int = 8) -> Check:
    """Greedy text with the KV cache equals greedy text without it."""
    cached = _greedy(model, prompt, tokens, use_cache=True)
    uncached = _greedy(model, prompt, tokens, use_cache=False)
    name = f"cached generation ({model.name})"
    if cached == uncached:
        return Check(name, True, f"{tokens} greedy tokens agree with and without the KV cache")
    agree = next((i for i, (a, b) in enumerate(zip(cached, uncached, strict=True)) if a != b), 0)
    versions = ", ".join(
        f"{p} {installed_version(p)}" for p in ("transformers", "transformer-lens")
    )
    return Check(
        name,
        False,
        f"greedy text with the KV cache departs from uncached text at token {agree} under "
        f"{versions}: install the locked versions (`pip install -c constraints.txt -e .`)",
    )


def check_known_continuation(model: LoadedModel) -> Check:
    """The embedded model continues the README's UK prompt as measured."""
    text = model.tokenizer.decode(_greedy(model, UK_PROMPT, 5, use_cache=True))
    name = f"known continuation ({model.name})"
    if text.startswith(UK_CONTINUATION):
        return Check(name, True, f"{UK_PROMPT[-20:]!r} -> {text!r}")
    return Check(
        name,
        False,
        f"expected {UK_CONTINUATION!r}, got {text!r}: the model or the stack differs from "
        "the one the suite was measured on",
    )


def _hook_count(model: LoadedModel) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf_model.modules())


def check_hooks(model: LoadedModel) -> Check:
    """A steering hook fires during a forward pass and is gone after its block."""
    from probes.directions import Direction
    from probes.interventions.hooks import steer

    name = f"hooks ({model.name})"
    before = _hook_count(model)
    layer = model.n_layers // 2
    fired = []
    direction = Direction(
        vector=torch.ones(model.d_model) / model.d_model**0.5,
        layer=layer,
        site="resid_post",
        typical_norm=1.0,
        attribute="doctor",
        method="doctor",
    )
    ids = model.tokenizer(["Hello there"], return_tensors="pt").to(model.device)
    with torch.inference_mode():
        plain = model.hf_model(**ids).logits
        with (
            steer(model, direction, 4.0),
            model.bridge.hooks(
                fwd_hooks=[(f"blocks.{layer}.hook_out", lambda a, hook: fired.append(1))]
            ),
        ):
            steered = model.hf_model(**ids).logits
        after = model.hf_model(**ids).logits
    if not fired:
        return Check(name, False, "a hook on the residual stream never fired: hooks are broken")
    if torch.equal(plain, steered):
        return Check(name, False, "a steering hook fired but did not change the logits")
    if _hook_count(model) != before or not torch.equal(plain, after):
        return Check(name, False, "hooks were left behind after their block ended")
    return Check(name, True, "a steering hook fires, changes the logits and is removed")


def check_store_roundtrip(model: LoadedModel) -> Check:
    """Activations written to a store read back equal to a direct run."""
    from probes.cache.extraction import extract

    name = f"store round-trip ({model.name})"
    prompts = ["Hello there my friend", "Hi", "I love the colour of autumn leaves."]
    layer = model.n_layers - 1
    with tempfile.TemporaryDirectory(prefix="probes-doctor-") as root:
        store = extract(
            model, prompts, layers=[layer], cache_root=root, progress=False, batch_size=2
        )
        stored = store.get(layer)
        reopened = type(store).open(store.path).get(layer)
    reference = []
    for prompt in prompts:
        ids = model.tokenizer([prompt], return_tensors="pt").to(model.device)
        with torch.inference_mode():
            _, cache = model.bridge.run_with_cache(ids.input_ids)
        reference.append(cache[f"blocks.{layer}.hook_out"][0, -1].float().cpu())
    expected = torch.stack(reference)
    error = float((stored - expected).abs().max())
    if not torch.equal(stored, reopened):
        return Check(name, False, "a store read back different numbers than it was written with")
    if error > 1e-4 * max(1.0, float(expected.abs().max())):
        return Check(name, False, f"stored activations differ from a direct run by {error:.2e}")
    return Check(name, True, f"{len(prompts)} rows written, reopened and equal to a direct run")


def self_checks(model: LoadedModel) -> Iterator[Check]:
    """The model-level checks, each guarded so one crash is one failed line."""
    checks: list[Callable[[LoadedModel], Check]] = [
        check_cached_generation,
        check_hooks,
        check_store_roundtrip,
    ]
    if model.spec == "gemma-3-270m":
        checks.insert(1, check_known_continuation)
    for check in checks:
        label = check.__name__.removeprefix("check_").replace("_", " ")
        try:
            yield check(model)
        except ProbesError as exc:
            yield Check(f"{label} ({model.name})", False, str(exc))
        except Exception as exc:  # a self-check reports, never crashes the doctor
            yield Check(f"{label} ({model.name})", False, f"{type(exc).__name__}: {exc}")


def run_doctor(models: tuple[str, ...] | None = None) -> Iterator[Check]:
    """Every check, in report order. ``models`` defaults to the tiny ones plus the embedded
    model when it is converted."""
    from probes.models.loading import is_converted, load_model

    yield from check_versions()
    yield check_device()
    yield check_embedded_model()
    if models is None:
        models = ("tiny-gemma3", "tiny-gpt2") + (("gemma-3-270m",) if is_converted() else ())
    for spec in models:
        start = time.perf_counter()
        try:
            model = load_model(spec, device="cpu" if spec.startswith("tiny") else None)
        except Exception as exc:
            yield Check(f"load ({spec})", False, f"{type(exc).__name__}: {exc}")
            continue
        yield Check(f"load ({spec})", True, f"{time.perf_counter() - start:.1f} s")
        yield from self_checks(model)
