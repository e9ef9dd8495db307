"""Our GPT2 equals Hugging Face's GPT2LMHeadModel: logits, loss and every parameter gradient (fp32)."""
import numpy as np
import pytest
import torch
import transformers  # a test extra; `make setup` installs it (no skip: a missing reference is a failure)

from gpt2lab.gpt2.config import GPTConfig
from gpt2lab.gpt2.model import GPT2, hf_config, init_params


ODD = dict(n_layer=3, n_head=3, n_embd=48, n_positions=37, vocab_size=101)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hf_model(seed=0):
    """A randomly initialised GPT2LMHeadModel of an odd shape, dropout off, eager attention."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**ODD, n_ctx=ODD["n_positions"], resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                                  bos_token_id=0, eos_token_id=0)
    cfg._attn_implementation = "eager"
    model = transformers.GPT2LMHeadModel(cfg).eval()
    # HF's init (std 0.02, zero biases, LN = (1, 0)) keeps activations so small that e.g. exact GELU passes
    # for tanh-GELU. Randomise everything at O(1) activation scale so any wrong piece shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.normal_(0.0, 0.1).add_(1.0 if ".ln_" in name or "ln_f" in name else 0.0)
            else:
                p.normal_(0.0, 1.0 / min(p.shape) ** 0.5)
    return model


def ours_from(hf):
    return GPT2.from_hf_state_dict(hf.state_dict(), hf_config(hf.config.to_dict())).eval()


def hf_grads(hf):
    """HF grads renamed to ours and transposed to (out, in)."""
    conv1d = ("c_attn.weight", "c_proj.weight", "c_fc.weight")
    return {n: (p.grad.t() if n.endswith(conv1d) else p.grad) for n, p in hf.named_parameters()}


def test_logits_loss_and_every_gradient_match_transformers():
    hf = hf_model()
    ours = ours_from(hf)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, ODD["vocab_size"], (2, ODD["n_positions"]), generator=g)
    out = hf(idx, labels=idx)
    # HF shifts labels inside; we pass the shifted targets and ignore (-1) the last position
    targets = torch.full_like(idx, -1)
    targets[:, :-1] = idx[:, 1:]
    logits, loss = ours(idx, targets)
    assert (logits - out.logits).abs().max().item() <= 1e-5
    assert abs(loss.item() - out.loss.item()) <= 1e-6
    out.loss.backward()
    loss.backward()
    expected = hf_grads(hf)
    ours_named = dict(ours.named_parameters())
    assert set(ours_named) == set(expected)  # every parameter is compared, none skipped
    for name, p in ours_named.items():
        err = (p.grad - expected[name]).abs().max().item()
        scale = expected[name].abs().max().item()
        assert err <= 1e-5 * max(1.0, scale), f"{name}: max abs grad error {err:.3g}"


def test_parameter_names_and_shapes_are_nanogpt():
    cfg = GPTConfig(block_size=37, vocab_size=101, n_layer=2, n_head=3, n_embd=48)
    model = GPT2(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["transformer.wte.weight"] == (101, 48)
    assert shapes["transformer.wpe.weight"] == (37, 48)
    assert shapes["transformer.h.1.attn.c_attn.weight"] == (144, 48)
    assert shapes["transformer.h.1.mlp.c_proj.weight"] == (48, 192)
    assert "lm_head.weight" not in shapes and model.lm_head.weight is model.transformer.wte.weight
    assert model.num_params() == cfg.num_params()
    assert set(model.state_dict()) == set(shapes) | {"lm_head.weight"}  # the causal mask is not saved


def test_gpt2_init_scales_residual_projections():
    cfg = GPTConfig(block_size=16, vocab_size=64, n_layer=8, n_head=4, n_embd=128)
    p = init_params(cfg, seed=3)
    assert abs(p["transformer.h.0.mlp.c_proj.weight"].std() - 0.02 / np.sqrt(16)) < 5e-4
    assert abs(p["transformer.h.0.mlp.c_fc.weight"].std() - 0.02) < 5e-4
    assert np.all(p["transformer.h.0.attn.c_attn.bias"] == 0) and np.all(p["transformer.ln_f.weight"] == 1)
    assert all(np.array_equal(p[k], v) for k, v in init_params(cfg, seed=3).items())


@pytest.mark.parametrize("safe", [True, False])
def test_from_pretrained_reads_a_saved_folder(tmp_path, safe):
    hf = hf_model(seed=2)
    hf.save_pretrained(tmp_path)
    if not safe:
        # transformers 5 only writes safetensors; older releases' safe_serialization=False wrote this file
        (tmp_path / "model.safetensors").unlink()
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).is_file()
    ours = GPT2.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, ODD["vocab_size"], (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(idx)[0] - hf(idx).logits).abs().max().item() <= 1e-5


def test_from_pretrained_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        GPT2.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="activation_function"):
        hf_config(dict(ODD, activation_function="relu"))


def test_generate_is_deterministic_with_a_generator():
    model = GPT2(GPTConfig(block_size=8, vocab_size=50, n_layer=1, n_head=2, n_embd=16)).eval()
    idx = torch.zeros((2, 1), dtype=torch.long)

    def sample(seed, **kw):
        return model.generate(idx, 12, generator=torch.Generator().manual_seed(seed), **kw)

    a, b = sample(5, top_k=10), sample(5, top_k=10)
    assert a.shape == (2, 13) and torch.equal(a, b)
    assert not torch.equal(sample(5), sample(6))
    greedy = model.generate(idx, 12, temperature=0)
    assert torch.equal(greedy, model.generate(idx, 12, temperature=0))
    assert a.max().item() < 50


@pytest.mark.parametrize("kwargs, field", [
    (dict(n_embd=50, n_head=3), "n_embd"),
    (dict(n_layer=0), "n_layer"),
    (dict(vocab_size=-1), "vocab_size"),
    (dict(block_size=2.5), "block_size"),
])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**kwargs)


def test_config_presets():
    assert GPTConfig.preset("gpt2").num_params() == 124_439_808
    assert GPTConfig.preset("tiny") == GPTConfig(block_size=128, vocab_size=50257, n_layer=4, n_head=4, n_embd=128)
    assert GPTConfig.preset("small", n_layer=2).n_layer == 2
    with pytest.raises(ValueError, match="unknown config 'huge'"):
        GPTConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown field"):
        GPTConfig.preset("tiny", width=3)


def test_forward_rejects_too_long_context():
    model = GPT2(GPTConfig(block_size=4, vocab_size=10, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="exceeds block_size 4"):
        model(torch.zeros((1, 5), dtype=torch.long))
