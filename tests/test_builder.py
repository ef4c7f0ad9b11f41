import pytest
import torch
from torch import nn

from space import Arch, build_model, cost
from space.blocks import Block, SqueezeExciteModule, StochasticDepth
from space.presets import get_preset


# TINY's total stride is 4 (stem 1, two stride-2 stages); padding k // 2 gives ceil(n / 2)
# per stride: 23 -> 12 -> 6.
@pytest.mark.parametrize("resolution, side", [(16, 4), (23, 6), (32, 8), (48, 12)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_output_shapes_at_several_resolutions(tiny_arch, resolution, side, channels_last):
    model = build_model(tiny_arch, num_classes=7).eval()
    x = torch.randn(3, 3, resolution, resolution)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x)
        feats = model.forward_features(x)
    assert y.shape == (3, 7)
    assert feats.shape == (3, 32, side, side)
    assert torch.isfinite(y).all()


def test_cifar_b0_keeps_a_2x2_map_and_trains_a_step():
    arch = get_preset("efficientnet_b0_cifar").arch()
    assert arch.resolution == 32 and arch.final_resolution() >= 2
    model = build_model(arch, num_classes=10).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert model.forward_features(x).shape[-2:] == (2, 2)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_block_structure_follows_the_description():
    arch = Arch.from_string(
        "net_r32_silu_dp0.5-stem_c16_s1-mb_k5_s1_e1_c16_l2_se0.25-mb_k3_s2_e4_c24_l1-"
        "fmb_k3_s1_e1_c24_l1-fmb_k3_s1_e4_c32_l1_se0.25-head_c64_do0.1")
    model = build_model(arch)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert len(blocks) == 5
    # MBConv e1: no expansion conv; depthwise 5x5 on 16 channels; SE squeeze int(16*0.25)=4.
    convs = [m for m in blocks[0].layers.modules() if isinstance(m, nn.Conv2d)]
    depthwise = convs[0]
    assert depthwise.kernel_size == (5, 5) and depthwise.groups == 16
    se = [m for m in blocks[0].modules() if isinstance(m, SqueezeExciteModule)][0]
    assert se.fc1.out_channels == 4
    assert blocks[0].residual and blocks[1].residual and not blocks[2].residual
    # stochastic depth grows with the global block index: 0, 0.1, (2: no residual), 0.3
    rates = [b.drop_path.p for b in blocks if isinstance(b.drop_path, StochasticDepth)]
    assert rates == pytest.approx([0.0, 0.5 * 1 / 5, 0.5 * 3 / 5])
    # Fused e1: a single 3x3 conv with activation; fused e4: 3x3 to 96 then 1x1 projection.
    fused1 = [m for m in blocks[3].layers.modules() if isinstance(m, nn.Conv2d)]
    assert len(fused1) == 1 and fused1[0].kernel_size == (3, 3)
    fused4 = [m for m in blocks[4].layers.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in fused4] == [96, 6, 96, 32]  # conv, SE fc1/fc2, projection
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.1
    # Parameters by hand (conv weights + BN scale and shift; SE convs with biases):
    # stem 3*16*9 + 32 = 464; MBConv e1 k5 on 16 with SE 4: 16*25 + 32 + (16*4 + 4) +
    # (4*16 + 16) + 16*16 + 32 = 868, twice; MBConv 16 -> 64 -> 24: 16*64 + 128 + 64*9 + 128
    # + 64*24 + 48 = 3,440; Fused e1 24 -> 24: 24*24*9 + 48 = 5,232; Fused 24 -> 96 -> 32
    # with SE 6: 24*96*9 + 192 + (96*6 + 6) + (6*96 + 96) + 96*32 + 64 = 25,318; head 32*64
    # + 128 = 2,176; classifier 64*1000 + 1000 = 65,000.
    expected = 464 + 2 * 868 + 3_440 + 5_232 + 25_318 + 2_176 + 65_000
    assert sum(p.numel() for p in model.parameters()) == expected == cost(arch).params


def test_stochastic_depth_drops_whole_samples_only_in_training():
    layer = StochasticDepth(0.5)
    x = torch.ones(2000, 4, 2, 2)
    torch.manual_seed(0)
    y = layer.train()(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()
    assert 0.4 < (per_sample[:, 0] == 0).float().mean() < 0.6
    assert torch.equal(layer.eval()(x), x)


@pytest.mark.parametrize("activation, module", [
    ("relu", nn.ReLU), ("relu6", nn.ReLU6), ("hardswish", nn.Hardswish), ("gelu", nn.GELU)])
def test_other_activations(tiny_arch, activation, module):
    model = build_model(tiny_arch.replace(activation=activation), num_classes=3).eval()
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 3)
    # TINY has 7 activations: stem; MBConv expand, depthwise and SE; one per Fused block
    # (the projection has none); head.
    acts = [m for m in model.modules() if isinstance(m, (nn.SiLU, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.GELU))]
    assert len(acts) == 7 and all(type(m) is module for m in acts)


@pytest.mark.parametrize("bad", [-1, True, 2.0, "10"])
def test_bad_num_classes(tiny_arch, bad):
    with pytest.raises(ValueError, match="num_classes"):
        build_model(tiny_arch, num_classes=bad)


@pytest.mark.parametrize("num_classes", [10, 1000])
def test_initial_logits_are_order_one_for_any_class_count(num_classes):
    arch = get_preset("efficientnet_b0_cifar").arch()
    torch.manual_seed(0)
    model = build_model(arch, num_classes=num_classes).train()  # batch statistics, as in step 1
    with torch.no_grad():
        logits = model(torch.randn(16, 3, 32, 32))
    assert logits.std() < 1.0
    loss = nn.functional.cross_entropy(logits, torch.zeros(16, dtype=torch.long))
    assert loss == pytest.approx(torch.log(torch.tensor(float(num_classes))).item(), rel=0.25)


# --- timm-style model API -------------------------------------------------------------

def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_create_model_by_preset_name_like_timm():
    import space

    with torch.device("meta"):
        model = space.create_model("efficientnet_b0", num_classes=10)
    # Published B0 count at 1000 classes, less (1280 + 1) * (1000 - 10) classifier weights.
    assert n_params(model) == 5_288_548 - 1281 * 990
    assert model.num_features == 1280 and model.num_classes == 10


def test_build_model_accepts_an_arch_a_preset_name_or_an_arch_string(tiny_arch):
    from conftest import TINY

    with torch.device("meta"):
        by_name = build_model("efficientnet_b1")
        by_string = build_model(TINY, num_classes=7)
        by_arch = build_model(tiny_arch, num_classes=7)
    assert n_params(by_name) == 7_794_184  # published efficientnet_b1 count
    # TINY by hand: stem 3*8*9 + 16 = 232; MBConv 8 -> 16 -> 16 with SE 2: 8*16 + 32 +
    # 16*9 + 32 + (16*2 + 2) + (2*16 + 16) + 16*16 + 32 = 706; Fused 16 -> 32 -> 24:
    # 16*32*9 + 64 + 32*24 + 48 = 5,488; Fused 24 -> 48 -> 24: 24*48*9 + 96 + 48*24 + 48
    # = 11,664; head 24*32 + 64 = 832; classifier 32*7 + 7 = 231.
    assert n_params(by_string) == n_params(by_arch) == 232 + 706 + 5_488 + 11_664 + 832 + 231


def test_forward_features_and_forward_head(tiny_arch):
    model = build_model(tiny_arch, num_classes=7).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        full = model(x)
    assert feats.shape == (2, 32, 4, 4)  # head_c32; 16 px / (1 * 2 * 2)
    assert pooled.shape == (2, 32) and model.num_features == 32
    assert torch.allclose(pooled, feats.mean((2, 3)), atol=1e-6)
    assert torch.allclose(logits, pooled @ model.classifier.weight.T + model.classifier.bias, atol=1e-5)
    assert torch.allclose(full, logits, atol=1e-6)


def test_reset_classifier(tiny_arch):
    model = build_model(tiny_arch, num_classes=5).eval()
    before = n_params(model)
    model.reset_classifier(7)
    assert n_params(model) - before == (32 + 1) * (7 - 5)
    assert model.num_classes == 7 and model.get_classifier() is model.classifier
    bound = 1 / 32 ** 0.5  # the builder's rule: uniform(+-1/sqrt(in_features)), zero bias
    assert model.classifier.weight.abs().max() <= bound and torch.all(model.classifier.bias == 0)
    assert model.classifier.weight.std() > bound / 4  # initialised, not zeros
    with torch.no_grad():
        assert model(torch.randn(3, 3, 16, 16)).shape == (3, 7)
    model.reset_classifier(0)  # timm's convention: no classifier, pooled features out
    assert n_params(model) == before - (32 + 1) * 5
    with torch.no_grad():
        assert model(torch.randn(3, 3, 16, 16)).shape == (3, 32)


def test_create_model_options(tiny_arch):
    import space
    from space.errors import UserError

    model = space.create_model(tiny_arch, num_classes=3, drop_rate=0.3, drop_path_rate=0.5)
    assert model.dropout.p == 0.3 and model.arch.drop_path == 0.5
    # Block 2 of 3 carries 0.5 * 2 / 3 (the only residual block: 24 -> 24, stride 1).
    rates = [m.p for m in model.modules() if isinstance(m, StochasticDepth)]
    assert rates == pytest.approx([0.5 * 2 / 3])
    with pytest.raises(UserError, match="pretrained"):
        space.create_model("efficientnet_b0", pretrained=True)
    assert space.create_model(tiny_arch, num_classes=2, in_chans=1)(torch.randn(1, 1, 16, 16)).shape == (1, 2)
