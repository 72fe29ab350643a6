"""CUDA-specific kernel tests (the packing kernel, the float baseline, the XNOR GEMM at
tile and word edges, the device-level helpers, the convolution).

The generic kernel properties of tests/test_kernels.py already rerun on "cuda" through the
``backend`` fixture.  These run wherever the backend is available: on a GPU, or in
Numba's simulator (``NUMBA_ENABLE_CUDASIM=1``), where the kernels use smaller thread blocks
(:data:`minibnn.kernels.cuda.GEMM_SIM`), so shapes here stay tiny but still span several
blocks and K stages.  One test runs the GPU tile configuration itself.
"""

import numpy as np
import pytest

from minibnn import kernels
from minibnn.kernels import reference
from minibnn.testing import assert_exact

if "cuda" not in kernels.available_backends():
    pytest.skip("the cuda backend is not available here (no GPU; set NUMBA_ENABLE_CUDASIM=1 "
                "for the simulator)", allow_module_level=True)

from numba import cuda  # noqa: E402

from minibnn.kernels import cuda as kc  # noqa: E402

rng = np.random.default_rng(1992)


def signs_with_zeros(shape, dtype=np.float64):
    x = rng.standard_normal(shape)
    x[rng.random(shape) < 0.1] = 0.0
    x[rng.random(shape) < 0.05] = -0.0
    return x.astype(dtype)


def nonzero(shape):
    """Random values with no exact zero (so every sign is decided by the value)."""
    x = rng.standard_normal(shape)
    x[x == 0] = 1.0
    return x


def packed_u32(x):
    """reference.pack viewed as the uint32 words the device kernels read."""
    return np.ascontiguousarray(reference.pack(x)).view(np.uint32)


# ---------------------------------------------------------------- packing kernel

@pytest.mark.parametrize("k", [1, 20, 31, 32, 33, 63, 64, 65, 100, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_device_matches_reference(k, dtype):
    x = signs_with_zeros((3, k), dtype)
    got = kc.pack_device(cuda.to_device(x)).copy_to_host()
    assert_exact(got, packed_u32(x), f"pack_device k={k}")
    assert_exact(np.ascontiguousarray(got).view(np.uint64), reference.pack(x))


def test_pack_device_many_rows_and_upper_half_zero():
    # K = 20: ceil(K/32) = 1 is odd, so word 1 (the upper half of the uint64) must be 0;
    # 37 rows span several blocks of the packing kernel
    x = signs_with_zeros((37, 20), np.float32)
    got = kc.pack_device(cuda.to_device(x)).copy_to_host()
    assert got.shape == (37, 2)
    assert not got[:, 1].any()
    assert_exact(got, packed_u32(x))


def test_pack_host_api():
    x = signs_with_zeros((2, 3, 130))
    assert_exact(kc.pack(x), reference.pack(x))
    for dtype in (np.int8, np.int64, np.float16):
        xi = (rng.standard_normal((4, 70)) * 3).astype(dtype)
        assert_exact(kc.pack(xi), reference.pack(xi), f"pack {dtype.__name__}")
    assert kc.pack(np.zeros((0, 5))).shape == (0, 1)


def test_pack_keeps_float64_signs():
    # -1e-320 is negative in float64 but -0.0 (sign +1) in float32: no silent downcast
    x = np.array([[-1e-320, 1e-320, -0.0, 0.0, -5.0]])
    assert_exact(kc.pack(x), reference.pack(x))
    assert kc.pack(x)[0, 0] == 0b01110


def test_pack_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        kc.pack(np.array([[1.0, np.nan, 2.0]]))
    with pytest.raises(ValueError, match="NaN"):
        kc.pack_device(cuda.to_device(np.array([[np.nan]], dtype=np.float32)))


# ---------------------------------------------------------------- float baseline

@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (17, 33, 5), (16, 16, 16), (3, 40, 18)])
def test_matmul_f32_tiled_matches_numpy(m, k, n):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    got = kc.matmul_f32_tiled(a, b)
    assert got.shape == (m, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- XNOR GEMM

def run_xnor(a, b, csa=True, config=None, words=None):
    """a (M, K), b (N, K) real -> device XNOR GEMM result (M, N) int32 (host)."""
    k = a.shape[1]
    aw, bw = packed_u32(a), packed_u32(b)
    if words is not None:                      # fewer words per row than 2 * ceil(K/64)
        aw, bw = np.ascontiguousarray(aw[:, :words]), np.ascontiguousarray(bw[:, :words])
    out = cuda.device_array((a.shape[0], b.shape[0]), dtype=np.int32)
    kc.xnor_gemm_device(cuda.to_device(aw), cuda.to_device(bw), k, out, csa=csa, config=config)
    return out.copy_to_host()


@pytest.mark.parametrize("csa", [True, False])
@pytest.mark.parametrize("m,k,n", [
    (1, 1, 1), (1, 33, 1), (9, 33, 17), (17, 129, 9), (16, 256, 16), (3, 1, 20),
    (10, 300, 7), (5, 31, 12), (33, 520, 18)])
def test_xnor_gemm_device_edges(csa, m, k, n):
    # no shape is a multiple of the tile (16 x 16 in the simulator, 64 x 64 on the GPU) or
    # of the K stage (256 bits / 1024 bits), except (16, 256, 16), one exact simulator tile
    a, b = signs_with_zeros((m, k)), signs_with_zeros((n, k))
    assert_exact(run_xnor(a, b, csa=csa), reference.binary_matmul(a, b.T), f"xnor {m}x{k}x{n}")


def test_xnor_gemm_k1_no_zeros():
    a, b = nonzero((19, 1)), nonzero((11, 1))
    expected = (np.sign(a) @ np.sign(b).T).astype(np.int32)
    assert_exact(run_xnor(a, b), expected)
    assert_exact(kernels.xnor_gemm(kernels.pack(a), kernels.pack(b), 1, backend="cuda"), expected)


@pytest.mark.parametrize("k,words", [(70, 3), (20, 1), (33, 2)])
def test_xnor_gemm_device_odd_word_count(k, words):
    # the device API accepts ceil(K/32) words per row (odd counts too)
    a, b = signs_with_zeros((6, k)), signs_with_zeros((9, k))
    assert_exact(run_xnor(a, b, words=words), reference.binary_matmul(a, b.T))


def test_xnor_gemm_gpu_tile_config_in_simulator():
    # the GPU configuration (16 x 16 threads, 4 x 4 per thread, 32-word K stages) on a shape
    # with two row blocks, a partial column block and a partial second K stage
    a, b = signs_with_zeros((65, 1100)), signs_with_zeros((3, 1100))
    assert_exact(run_xnor(a, b, config=kc.GEMM_GPU), reference.binary_matmul(a, b.T))


def test_xnor_gemm_column_chunks(monkeypatch):
    # more column blocks than gridDim.y allows: launched in chunks (limit lowered here)
    monkeypatch.setattr(kc, "MAX_GRID_Y", 2)
    a, b = signs_with_zeros((5, 70)), signs_with_zeros((41, 70))
    assert_exact(run_xnor(a, b), reference.binary_matmul(a, b.T))


def test_prepared_weights_on_device():
    b = signs_with_zeros((13, 150))
    pw = kernels.prepare_weights(kernels.pack(b), 150, backend="cuda")
    assert isinstance(pw, kernels.PreparedWeights) and pw.backend == "cuda"
    assert (pw.n, pw.k, pw.shape) == (13, 150, (13, 3))
    assert cuda.devicearray.is_cuda_ndarray(pw.data)
    for m in (1, 10):                          # reused across calls
        a = signs_with_zeros((m, 150))
        assert_exact(kernels.xnor_gemm(kernels.pack(a), pw, 150, backend="cuda"),
                     reference.binary_matmul(a, b.T))


def test_xnor_gemm_device_rejects_bad_input():
    a = cuda.to_device(np.zeros((2, 2), np.uint32))
    b = cuda.to_device(np.zeros((3, 2), np.uint32))
    out = cuda.device_array((2, 3), np.int32)
    with pytest.raises(ValueError, match="fit"):
        kc.xnor_gemm_device(a, b, 65, out)
    with pytest.raises(ValueError, match="words"):
        kc.xnor_gemm_device(a, cuda.to_device(np.zeros((3, 3), np.uint32)), 10, out)
    with pytest.raises(ValueError, match="shape"):
        kc.xnor_gemm_device(a, b, 10, cuda.device_array((3, 2), np.int32))
    with pytest.raises(TypeError, match="uint32"):
        kc.xnor_gemm_device(cuda.to_device(np.zeros((2, 1), np.uint64)), b, 10, out)
    with pytest.raises(TypeError, match="device array"):
        kc.xnor_gemm_device(np.zeros((2, 2), np.uint32), b, 10, out)


# ---------------------------------------------------------------- convolution

@pytest.mark.parametrize("shape_x,shape_w,stride,padding,dtype", [
    ((2, 3, 5, 5), (4, 3, 3, 3), 1, 1, np.float32),
    ((1, 33, 4, 5), (3, 33, 3, 2), 2, 1, np.float64),     # two channel words, odd count
    ((1, 1, 6, 6), (2, 1, 5, 5), 1, 2, np.float32),
    ((2, 2, 7, 4), (9, 2, 2, 3), 3, 0, np.float64),
])
def test_binary_conv2d_matches_reference(shape_x, shape_w, stride, padding, dtype):
    x = signs_with_zeros(shape_x, dtype)
    w = signs_with_zeros(shape_w)
    assert_exact(kc.binary_conv2d(x, w, stride, padding),
                 reference.binary_conv2d(x, w, stride=stride, padding=padding))


def test_binary_conv2d_device_weights_reused():
    w = signs_with_zeros((5, 4, 3, 3))
    cw = kc.prepare_conv_weights(w)
    for hw in (4, 6):                          # different input sizes, same weights
        x = signs_with_zeros((2, 4, hw, hw), np.float32)
        out = kc.binary_conv2d_device(cuda.to_device(x), cw, 1, 1)
        assert out.shape == (2, 5, hw, hw)
        assert_exact(out.copy_to_host(), reference.binary_conv2d(x, w, stride=1, padding=1))


def test_binary_conv2d_device_rejects_nan():
    x = np.ones((1, 2, 3, 3), np.float32)
    x[0, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kc.binary_conv2d_device(cuda.to_device(x), kc.prepare_conv_weights(np.ones((1, 2, 2, 2))), 1, 0)


def test_backend_reports_config():
    assert kc.CONFIG["simulator"] == bool(kc.SIMULATOR)
    assert kc.CONFIG["gemm"] == (kc.GEMM_SIM if kc.SIMULATOR else kc.GEMM_GPU)
    kc.check_available()                       # does not raise here


def test_engine_forward_on_cuda_equals_float():
    # the training engine's hidden layers run on the "cuda" kernels (--backend cuda)
    from minibnn import zoo
    x = np.random.default_rng(5).uniform(-1, 1, (3, 1, 4, 4)).astype(np.float32)
    on_gpu = zoo.build("mnist_mlp", hidden=9, depth=2, in_features=16, backend="cuda", seed=2)
    plain = zoo.build("mnist_mlp", hidden=9, depth=2, in_features=16, backend="float", seed=2)
    np.testing.assert_array_equal(on_gpu.forward(x, training=False), plain.forward(x, training=False))
    assert on_gpu[4].prepared is not None and on_gpu[4].prepared.backend == "cuda"
