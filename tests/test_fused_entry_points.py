"""The fused path's entry points refuse what they cannot run, in one line naming the argument (CPU process)."""
import numpy as np
import pytest

from gpt2lab.gpt2.config import GPTConfig
from gpt2lab.gpt2.kernel_model import KernelGPT2
from gpt2lab.kernels.adamw import adamw_update_flat
from gpt2lab.kernels.crossentropy import fused_classifier


def classifier_args(B=2, T=3, V=7):
    z = np.zeros
    return dict(losses=z((B, T), np.float32), dlogits=z((B, T, V), np.float32), probs=z((B, T, V), np.float32),
                logits=z((B, T, V), np.float32), targets=z((B, T), np.int32), dlosses=z((B, T), np.float32))


def test_fused_classifier_is_cuda_only():
    with pytest.raises(TypeError, match="fused_classifier: a CUDA kernel: pass CUDA device arrays"):
        fused_classifier(**classifier_args())


def test_fused_classifier_checks_its_arguments():
    args = classifier_args()
    args["dlosses"] = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"fused_classifier: dlosses must be float32 \(B,T\)"):
        fused_classifier(**args)
    args = classifier_args()
    args["targets"] = np.full((2, 3), 7, np.int32)
    with pytest.raises(ValueError, match=r"fused_classifier: targets must be in \[0, V\) = \[0, 7\), got 7"):
        fused_classifier(**args)


def test_adamw_update_flat_is_cuda_only_and_checks_its_table():
    n = 10
    flat = [np.zeros(n, np.float32) for _ in range(4)]
    ends, decay = np.array([4, 10], np.int64), np.array([1, 0], np.float32)
    with pytest.raises(TypeError, match="adamw_update_flat: a CUDA kernel"):
        adamw_update_flat(*flat, ends, decay, step=1)
    with pytest.raises(ValueError, match=r"adamw_update_flat: region_decay must be float32 \(R\)"):
        adamw_update_flat(*flat, ends, decay[:1], step=1)
    with pytest.raises(ValueError, match="adamw_update_flat: step must be an int >= 1"):
        adamw_update_flat(*flat, ends, decay, step=0)


def test_the_cpu_fused_model_keeps_the_cpu_classifier_and_adamw():
    """The fused classifier and the flat AdamW are CUDA kernels: a CPU fused model calls neither (it would
    fail on them, above), only the fused kernels that have CPU loops."""
    model = KernelGPT2(GPTConfig(block_size=4, vocab_size=11, n_layer=1, n_head=2, n_embd=8), fused=True)
    assert {"crossentropy_forward", "crossentropy_backward", "adamw_update", "attention_forward_flash",
            "residual_layernorm_backward"} <= model.calls
    assert not {"fused_classifier", "adamw_update_flat", "attention_forward", "residual_backward"} & model.calls
    loss = model.forward([[1, 2, 3]], [[2, 3, 4]])
    model.zero_grad()
    model.backward()
    model.adamw_step(1e-3)
    assert np.isfinite(loss) and model.step == 1
