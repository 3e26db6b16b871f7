"""One precision setting: what it means per device, how the engines get it, and where autocast runs."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.inferers import SimpleInferer

from medguide.engines import AutocastCall, Evaluator, Trainer, engine_precision, resolve_precision
from medguide.engines import precision as precision_module


class AutocastProbe(torch.nn.Module):
    """A convolution that records, at each forward, whether CPU autocast is on and in which dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1)
        self.seen: list[torch.dtype | None] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on = torch.is_autocast_enabled("cpu")
        self.seen.append(torch.get_autocast_dtype("cpu") if on else None)
        return self.conv(x)


def data() -> list[dict]:
    return [{"image": torch.randn(1, 1, 4, 4, 4), "label": torch.randn(1, 1, 4, 4, 4)} for _ in range(2)]


def trainer(network: torch.nn.Module, device: str = "cpu", **kwargs) -> Trainer:
    return Trainer(
        device=torch.device(device),
        max_epochs=1,
        train_data_loader=data(),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=1e-3),
        loss_function=torch.nn.MSELoss(),
        decollate=False,
        **kwargs,
    )


def evaluator(network: torch.nn.Module, device: str = "cpu", **kwargs) -> Evaluator:
    return Evaluator(device=torch.device(device), val_data_loader=data(), network=network, decollate=False, **kwargs)


@pytest.fixture
def native_bfloat16(monkeypatch):
    """Every CPU and GPU counts as having native bfloat16, so the tests do not depend on the machine."""
    monkeypatch.setattr(precision_module, "_cpu_bfloat16", lambda: "amx")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


def test_what_each_setting_means_per_device(native_bfloat16):
    for device in ("cpu", "cuda"):
        assert resolve_precision("float32", device) is None
        assert resolve_precision("bfloat16", device) is torch.bfloat16
    assert resolve_precision("auto", "cuda") is torch.float16
    assert resolve_precision("float16", "cuda") is torch.float16
    assert resolve_precision("auto", "cpu") is torch.bfloat16
    with pytest.warns(UserWarning, match="running in float32"):
        assert resolve_precision("float16", "cpu") is None


def test_without_native_bfloat16_auto_is_float32_and_bfloat16_warns(monkeypatch):
    monkeypatch.setattr(precision_module, "_cpu_bfloat16", lambda: "none")
    assert resolve_precision("auto", "cpu") is None
    with pytest.warns(UserWarning, match="'bfloat16' is not supported on this cpu device"):
        assert resolve_precision("bfloat16", "cpu") is None


def test_without_amx_auto_is_float32_and_bfloat16_runs_with_a_warning(monkeypatch):
    monkeypatch.setattr(precision_module, "_cpu_bfloat16", lambda: "native")
    assert resolve_precision("auto", "cpu") is None
    with pytest.warns(UserWarning, match="bfloat16 on a CPU without AMX"):
        assert resolve_precision("bfloat16", "cpu") is torch.bfloat16


@pytest.mark.parametrize(
    ("amx_tiles", "amx_granted", "avx512_bf16", "native"),
    [
        (True, True, True, "amx"),
        (True, False, True, "native"),  # AMX the operating system does not grant (an old kernel) is not used
        (False, False, True, "native"),
        (False, False, False, "none"),  # AVX512 without BF16 instructions, where oneDNN still says bf16 is supported
    ],
)
def test_native_bfloat16_is_read_from_the_cpus_instructions(monkeypatch, amx_tiles, amx_granted, avx512_bf16, native):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx_tiles)
    monkeypatch.setattr(torch.cpu, "_init_amx", lambda: amx_granted)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(precision_module.platform, "machine", lambda: "x86_64")
    assert precision_module._cpu_bfloat16.__wrapped__() == native
    # torch's instruction checks are x86's; elsewhere oneDNN's word is taken, without AMX
    monkeypatch.setattr(precision_module.platform, "machine", lambda: "aarch64")
    assert precision_module._cpu_bfloat16.__wrapped__() == "native"


def test_auto_precision_trains_a_small_3d_densenet_with_finite_gradients():
    """On an AMD EPYC with AVX512-BF16 and no AMX (torch 2.13.0+cpu), bfloat16 autocast gave non-finite gradients
    of denseblock2's 3x3x3 convolution (2x2x2 voxels, 16 -> 4 channels) in 34 of 300 steps of this network, and the
    DMG bundle's tiny MRI classifier ended with NaN weights; this test failed there with ``auto`` forced to
    bfloat16. ``auto`` is float32 on such CPUs now; where it is bfloat16 (AMX) or float32, every step must have
    finite gradients."""
    from medguide.networks import image_encoder

    torch.manual_seed(0)
    encoder = image_encoder("densenet", 3, 1, init_features=4, growth_rate=4, block_config=[1, 1])
    network = torch.nn.Sequential(encoder.module, torch.nn.Linear(encoder.latent_features, 2))
    dtype = resolve_precision("auto", "cpu")
    non_finite = []
    for step in range(100):
        image, label = torch.randn(2, 1, 16, 16, 16), torch.randint(0, 2, (2,))
        with precision_module.autocast(dtype, "cpu"):
            loss = torch.nn.functional.cross_entropy(network(image), label)
        network.zero_grad()
        loss.backward()
        non_finite += [(step, n) for n, p in network.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not non_finite, f"precision 'auto' ({dtype}) gave non-finite gradients: {non_finite[:3]}"


def test_bfloat16_on_a_gpu_before_ampere_is_float32(monkeypatch):
    asked = []

    def capability(device=None):
        asked.append(device)
        return {0: (9, 0), 1: (7, 5)}[device.index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    # as PyTorch answers on a Turing GPU, which emulates bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("bfloat16", "cuda:0") is torch.bfloat16
    with pytest.warns(UserWarning, match="'bfloat16' is not supported on this cuda device"):
        assert resolve_precision("bfloat16", "cuda:1") is None
    assert [d.index for d in asked] == [0, 1]  # the device asked about, not the current one
    assert resolve_precision("auto", "cuda:1") is torch.float16


@pytest.mark.parametrize("bad", ["fp16", "FLOAT32", "", None, True])
def test_bad_values_raise(bad):
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision(bad, "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        trainer(AutocastProbe(), precision=bad)


def test_engine_arguments_on_cuda(native_bfloat16):
    assert engine_precision("auto", "cuda") == (True, {"dtype": torch.float16}, None)
    assert engine_precision("float16", "cuda") == (True, {"dtype": torch.float16}, None)
    assert engine_precision("bfloat16", "cuda") == (True, {"dtype": torch.bfloat16}, None)
    assert engine_precision("float32", "cuda") == (False, {}, None)
    # MONAI's amp autocasts only CUDA: on the CPU medguide's own autocast carries the dtype
    assert engine_precision("bfloat16", "cpu") == (False, {}, torch.bfloat16)
    assert engine_precision("float32", "cpu") == (False, {}, None)


@pytest.mark.parametrize(
    "precision, amp_kwargs",
    [("auto", {"dtype": torch.float16}), ("float32", {}), ("bfloat16", {"dtype": torch.bfloat16})],
)
def test_engines_get_amp_from_monai_constructor_arguments(monkeypatch, native_bfloat16, precision, amp_kwargs):
    """On a CUDA device (built, not run, so no GPU is needed), MONAI's constructors receive amp and amp_kwargs."""
    received = {}
    for monai_engine in (SupervisedTrainer, SupervisedEvaluator):
        original = monai_engine.__init__

        def spy(self, *args, _original=original, _name=monai_engine.__name__, **kwargs):
            received[_name] = (kwargs["amp"], kwargs["amp_kwargs"])
            _original(self, *args, **kwargs)

        monkeypatch.setattr(monai_engine, "__init__", spy)
    inferer = SimpleInferer()
    engines = [trainer(AutocastProbe(), "cuda", precision=precision, inferer=inferer)]
    engines.append(evaluator(AutocastProbe(), "cuda", precision=precision, inferer=inferer))
    amp = bool(amp_kwargs)
    assert received == {"SupervisedTrainer": (amp, amp_kwargs), "SupervisedEvaluator": (amp, amp_kwargs)}
    for engine in engines:
        assert (engine.amp, engine.amp_kwargs, engine.precision) == (amp, amp_kwargs, precision)
        assert engine.inferer is inferer  # on CUDA, MONAI's amp does the autocast


def test_a_gradscaler_only_for_float16(native_bfloat16):
    float16 = trainer(AutocastProbe(), "cuda", precision="float16")
    float16.fire_event(Events.STARTED)
    assert float16.scaler is None  # MONAI's run() makes its float16 GradScaler; nothing here replaces it
    bfloat16 = trainer(AutocastProbe(), "cuda", precision="bfloat16")
    bfloat16.fire_event(Events.STARTED)
    # MONAI autocasts only while the engine has a scaler: bfloat16 gets one that scales nothing
    assert bfloat16.scaler is not None and not bfloat16.scaler.is_enabled()


@pytest.mark.parametrize("name", ["amp", "amp_kwargs"])
def test_amp_is_refused_with_a_pointer_to_precision(name):
    value = True if name == "amp" else {"dtype": torch.float16}
    with pytest.raises(TypeError, match=rf"takes precision .* not '{name}'.*replace '{name}' with 'precision'"):
        trainer(AutocastProbe(), **{name: value})
    with pytest.raises(TypeError, match=rf"Evaluator takes precision .* not '{name}'"):
        evaluator(AutocastProbe(), **{name: value})


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_float32_means_no_autocast_anywhere(device):
    for engine in (trainer(AutocastProbe(), device), evaluator(AutocastProbe(), device, precision="float32")):
        assert engine.amp is False and engine.amp_kwargs == {}
        assert not isinstance(engine.inferer, AutocastCall)
    network = AutocastProbe()
    trainer(network, precision="float32").run()
    evaluator(network, precision="float32").run()
    assert network.seen == [None] * 4


def test_cpu_bfloat16_runs_the_forward_under_autocast(native_bfloat16):
    network = AutocastProbe()
    train = trainer(network, precision="bfloat16")
    train.run()
    assert network.seen == [torch.bfloat16] * 2
    assert train.state.output["pred"].dtype == torch.bfloat16
    assert train.state.output["loss"].dtype == torch.float32  # the loss is outside autocast
    assert network.conv.weight.grad.dtype == torch.float32
    network.seen.clear()
    evaluate = evaluator(network, precision="bfloat16")
    evaluate.run()
    assert network.seen == [torch.bfloat16] * 2 and evaluate.state.output["pred"].dtype == torch.bfloat16
    assert not evaluate.amp  # MONAI's amp would autocast CUDA only


class RecordingScaler:
    """Stands in for MONAI's float16 ``torch.cuda.amp.GradScaler``, which needs a GPU to scale anything."""

    made: list[RecordingScaler] = []

    def __init__(self) -> None:
        self.scaled = 0
        RecordingScaler.made.append(self)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        self.scaled += 1
        return loss

    def unscale_(self, optimizer) -> None:
        pass

    def step(self, optimizer) -> None:
        optimizer.step()

    def update(self) -> None:
        pass


@pytest.mark.parametrize("precision, dtype", [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_a_cuda_trainer_run_autocasts_every_iteration(monkeypatch, native_bfloat16, precision, dtype):
    """MONAI's own ``run()`` and ``_iteration`` on an engine built for CUDA, with only the GPU's parts stood in for.

    MONAI makes its float16 GradScaler in ``run()`` before ignite's STARTED and autocasts only while the engine has
    a scaler: bfloat16 must still autocast at every iteration, with a scaler that scales nothing, and float16 must
    keep MONAI's scaler.
    """
    autocasts = []
    cpu_autocast = torch.autocast

    def recording_autocast(device_type, dtype=None, **kwargs):
        autocasts.append((device_type, dtype))
        return cpu_autocast("cpu", dtype=dtype)  # so that the forward sees the dtype, as it would on the GPU

    monkeypatch.setattr(torch, "autocast", recording_autocast)
    monkeypatch.setattr(torch.cuda.amp, "GradScaler", RecordingScaler)
    monkeypatch.setattr(RecordingScaler, "made", [])
    network = AutocastProbe()
    train = trainer(
        network,
        "cuda",
        precision=precision,
        grad_clip=1.0,
        prepare_batch=lambda batch, device, non_blocking, **kwargs: (batch["image"], batch["label"]),
    )
    train.run()
    assert autocasts == [("cuda", dtype)] * 2
    assert network.seen == [dtype] * 2
    assert train.state.output["pred"].dtype == dtype
    assert network.conv.weight.grad.dtype == torch.float32
    if precision == "float16":
        assert RecordingScaler.made == [train.scaler] and train.scaler.scaled == 2
    else:
        assert isinstance(train.scaler, torch.amp.GradScaler) and not train.scaler.is_enabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "precision, dtype", [("bfloat16", torch.bfloat16), ("float16", torch.float16), ("float32", torch.float32)]
)
def test_on_a_gpu_every_forward_runs_in_the_precision(precision, dtype):
    if dtype is torch.bfloat16 and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("bfloat16 falls back to float32 before compute capability 8")
    network = AutocastProbe().cuda()
    forwards = []
    network.conv.register_forward_hook(lambda module, args, output: forwards.append(output.dtype))
    train = trainer(network, "cuda", precision=precision)
    train.run()
    assert forwards == [dtype] * 2
    assert (train.scaler is not None and train.scaler.is_enabled()) == (precision == "float16")
    assert network.conv.weight.grad.dtype == torch.float32


class NaNBiasAtSecondStep(torch.nn.Module):
    """A 1x1x1 convolution whose bias gradient alone is NaN at the second step (the weight's stays finite)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1)
        self.calls = 0
        self.conv.bias.register_hook(lambda grad: grad * float("nan") if self.calls == 2 else grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x)


@pytest.mark.parametrize("grad_clip", [None, 12.0])
def test_non_finite_gradients_stop_the_run_before_the_step_naming_the_iteration(grad_clip):
    network = NaNBiasAtSecondStep()
    engine = trainer(network, grad_clip=grad_clip)
    weights = {}  # after the last step taken

    @engine.on(Events.ITERATION_COMPLETED)
    def keep(_):
        weights.update({name: value.clone() for name, value in network.state_dict().items()})

    # one parameter named: checked before the clipping, which would have spread the NaN to the weight too
    with pytest.raises(FloatingPointError, match=r"epoch 1, iteration 2 .* in 1 parameter\(s\), first \['conv.bias'\]"):
        engine.run()
    assert all(torch.equal(network.state_dict()[k], w) for k, w in weights.items())  # step 2 was not taken


def test_a_parameter_stepped_beside_the_network_is_checked_too():
    network, beside = torch.nn.Conv3d(1, 1, 1), torch.nn.Parameter(torch.ones(1))

    class Scaled(torch.nn.Module):  # the network the engine holds; ``beside`` is trained with it, not in it
        def __init__(self):
            super().__init__()
            self.conv = network

        def forward(self, x):
            return self.conv(x) * beside * float("nan")

    engine = trainer(Scaled())
    engine.optimizer = torch.optim.SGD([*network.parameters(), beside], lr=1e-3)
    with pytest.raises(FloatingPointError, match=r"a parameter outside the network, shape \[1\]"):
        engine.run()


def test_large_finite_gradients_do_not_stop_the_run():
    network = torch.nn.Conv3d(1, 1, 1)
    engine = trainer(network)
    engine.optimizer = torch.optim.SGD(network.parameters(), lr=0.0)
    network.weight.register_hook(lambda grad: torch.full_like(grad, 3e19))  # an L2 norm of these overflows
    engine.run()


def test_the_stop_at_non_finite_gradients_can_be_turned_off():
    network = NaNBiasAtSecondStep()
    trainer(network, check_finite=False).run()
    assert not torch.isfinite(network.conv.bias).all()
