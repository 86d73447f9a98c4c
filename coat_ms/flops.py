"""Analytic multiply-accumulate (MAC) count of a CoaT model for one image.

Counts the products of every matmul and convolution (patch embeddings, qkv, the two factorized
attention products, depthwise cpe/crpe convolutions, projections, MLPs, aggregate, head), from the
model's own configuration.  Normalisations, softmax, GELU, interpolation and elementwise ops are
not counted (as in the usual GMACs tables).  FLOPs ~= 2 x MACs.
"""
from .models.coat import CoaT
from .registry import model_entrypoint


def _attention_macs(tokens, dim, num_heads, crpe_window, grid):
    head_dim = dim // num_heads
    image_tokens = grid[0] * grid[1]
    qkv = tokens * dim * 3 * dim
    factor = 2 * tokens * dim * head_dim  # softmax(k)^T @ v, then q @ (.)
    crpe = image_tokens * sum(heads * head_dim * k * k for k, heads in crpe_window.items())
    proj = tokens * dim * dim
    return qkv + factor + crpe + proj


def _mlp_macs(tokens, dim, ratio):
    return 2 * tokens * dim * int(dim * ratio)


def _cpe_macs(grid, dim):
    return grid[0] * grid[1] * dim * 9


def count_macs(model, image_size=(224, 224)):
    """MACs for one image of ``image_size`` (H, W); ``model`` is a CoaT or a registered name."""
    if isinstance(model, str):
        model = model_entrypoint(model)(backend="stock")  # only its configuration is read: no kernels needed
    if not isinstance(model, CoaT):
        raise TypeError(f"count_macs expects a CoaT model or name, got {type(model).__name__}")
    H, W = image_size
    dims, depths = model.embed_dims, model.serial_depths
    window = model.crpe1.window
    heads = model.crpe1.num_heads
    ratios = [int(blocks[0].mlp.fc1.out_channels) / dim if len(blocks) else 0
              for blocks, dim in zip((model.serial_blocks1, model.serial_blocks2, model.serial_blocks3,
                                      model.serial_blocks4), dims)]
    macs = 0
    in_chs, stride = model.in_chans, model.patch_size
    grids = []
    for i in range(4):
        grid = (H // stride, W // stride)
        grids.append(grid)
        patch = model.patch_size if i == 0 else 2
        macs += grid[0] * grid[1] * in_chs * patch * patch * dims[i]
        tokens = 1 + grid[0] * grid[1]
        per_block = (_cpe_macs(grid, dims[i]) + _attention_macs(tokens, dims[i], heads, window, grid)
                     + _mlp_macs(tokens, dims[i], ratios[i]))
        macs += depths[i] * per_block
        in_chs, stride = dims[i], stride * 2
    if model.parallel_blocks is not None:
        mlp_ratio = model.parallel_blocks[0].mlp2.fc1.out_channels / dims[1]
        for _ in range(model.parallel_depth):
            for i in (1, 2, 3):
                tokens = 1 + grids[i][0] * grids[i][1]
                macs += (_cpe_macs(grids[i], dims[i]) + _attention_macs(tokens, dims[i], heads, window, grids[i])
                         + _mlp_macs(tokens, dims[i], mlp_ratio))
        macs += 3 * dims[3]  # aggregate
    macs += dims[3] * model.num_classes
    return macs


def count_params(model):
    """Unique trainable-or-not parameter elements (tied parameters counted once)."""
    total = 0
    for param in model.get_parameters():
        size = 1
        for s in param.shape:
            size *= s
        total += size
    return total
