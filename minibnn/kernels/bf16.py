"""bfloat16 GEMM for the training backward: ``C = round_bf16(A) @ round_bf16(B)``.

Why: a binary layer's backward has two float GEMMs, ``dw = x.T @ dout`` and
``dx = dout @ w_b.T``, whose +-1 operands are exact in bfloat16; only the upstream
gradient is rounded (to 8 significant bits).  CPUs with AVX512-BF16 have ``vdpbf16ps``:
per 32-bit lane ``c += a[2i] * b[2i] + a[2i+1] * b[2i+1]`` on bf16 pairs, 32
multiply-adds per instruction, twice the work of one float32 FMA.  See issue 14
("--grad-dtype bfloat16").

Definition (the NumPy text, also the fallback on CPUs without the instruction)::

    matmul(a, b) == round_bf16(a) @ round_bf16(b)      # float32 accumulation, any order

with :func:`round_bf16` round-to-nearest-even to the top 16 bits of each float32.

Kernel layout (BLIS-like, written like the XNOR micro-kernel of
:mod:`minibnn.kernels.cpu`):

* Both operands are rounded and packed as bf16 *pairs along K* in uint32 lanes, (low,
  high) = (k, k + 1), odd K zero-padded, by one panel packer (:func:`_pack_panel`) that
  reads the strided float32 input directly (``x.T``, ``w.T``, ``dout`` as they are: no
  float32 copy) through two vector intrinsics, one per contiguous layout:
  16 x 16 blocks converted and transposed in registers (:func:`_make_convert_transpose`)
  when the operand is contiguous along K, 16 lanes from two rows
  (:func:`_make_convert_pairs`) when it is contiguous along M or N; scalar otherwise.
* A (M, K) -> ``ap[kp, m]`` (KP, MA), MA = M rounded up to ``TILE_R``, rows past M zero:
  the micro-kernel broadcasts ``ap[kp, m0 + r]``.  Packed once, in parallel.
* B (K, N) is packed per parallel task into one column panel of ``NR = 16 * TILE_P``
  columns, ``bp[kp, j]`` = pair kp of column n0 + j (KP x NR, L1/L2 resident); so B is
  read from memory once and never written back whole (for ``dx`` B is the H x H weights).
* The micro-kernel (:func:`_make_tile`) keeps ``TILE_R x TILE_P`` zmm accumulators of 16
  float32, loads ``TILE_P`` B vectors per pair, broadcasts one A pair (32 bits) per row
  and issues ``vdpbf16ps``: the XNOR tile's structure with a float dot product instead of
  ``xor/popcount``.

The instruction itself differs from a float GEMM in three ways (measured on this AMD
Zen 5 CPU and as documented by Intel): bf16 *subnormal inputs count as zero* (DAZ),
subnormal results are flushed to zero (FTZ), and each pair is two sequentially rounded
float32 additions.  The last two stay within the float32 accumulation tolerance (at most
2**-126 absolute per addition); the first would not (a subnormal times a large value), so
packing flags any bf16-subnormal operand and :func:`matmul` then computes the definition
with NumPy instead -- exact contract, a slower call only for such (rare) inputs.

Shapes: ``a (M, K)``, ``b (K, N)``, ``out (M, N)`` float32; K the reduction length,
``KP = ceil(K / 2)`` pairs.

References: Intel 64 and IA-32 Architectures Software Developer's Manual, VDPBF16PS;
Van Zee and van de Geijn, "BLIS: A Framework for Rapidly Instantiating BLAS
Functionality", ACM TOMS 2015 (the packing/micro-kernel structure).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# register tile: 6 x 4 zmm accumulators (24 of the 32 zmm).  Measured on one core against
# 8x3, 12x2, 14x2, 7x4 and 4x4 on the backward shapes: best or within noise of the best
# on each, and 64 columns divide the hidden widths 1024..4096
TILE_R = 6         # rows of A per micro-kernel call
TILE_P = 4         # 16-float zmm vectors of columns per call
NR = 16 * TILE_P   # columns per B panel
MIN_TASKS = 8      # split M into blocks only when there are fewer column panels than this

_F32_EXP = 0x7F800000
_ABS = 0x7FFFFFFF


# ---------------------------------------------------------------------------
# The rounding (the definition) and the NumPy fallback
# ---------------------------------------------------------------------------

def round_bf16(x):
    """float32 array (any shape) -> float32 array of ``x`` rounded to the nearest bfloat16.

    Round-to-nearest-even on the top 16 bits of the IEEE float32 pattern: add
    ``0x7FFF + (bit 16)`` and clear the low 16 bits.  Carries walk into the exponent as
    they should (the largest finite floats round to inf, float32 subnormals round to
    bf16 subnormals or to the smallest normal).  NaN stays NaN (quietened: adding could
    carry a NaN with only low mantissa bits into inf), inf stays inf, signs are kept
    (-0 stays -0).
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ValueError(f"round_bf16: x must be float32, got dtype {x.dtype}")
    u = np.ascontiguousarray(x).view(np.uint32)
    lsb = (u >> np.uint32(16)) & np.uint32(1)
    # uint32 arithmetic: 0xFF7FFFFF + 0x8000 < 2**32, so no wrap for non-NaN patterns
    r = (u + np.uint32(0x7FFF) + lsb) & np.uint32(0xFFFF0000)
    nan = (u & np.uint32(_ABS)) > np.uint32(_F32_EXP)
    r = np.where(nan, (u & np.uint32(0xFFFF0000)) | np.uint32(0x00400000), r)
    return r.astype(np.uint32).view(np.float32).reshape(x.shape)


def _matmul_numpy(a, b, out):
    """The definition in NumPy float32 (fallback): ``round_bf16(a) @ round_bf16(b)``."""
    return np.matmul(round_bf16(a), round_bf16(b), out=out)


# ---------------------------------------------------------------------------
# Packing: float32 bit patterns -> bf16 pairs in uint32 lanes (Numba + vector IR)
# ---------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _bf16_bits(v):
    """uint32 pattern of a float32 -> its round_bf16 as a 16-bit pattern (unsigned int).
    Same rule as :func:`round_bf16`; unsigned arithmetic and a select, so loops vectorize."""
    v = np.uint32(v)
    rounded = (v + np.uint32(0x7FFF) + ((v >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    quiet = (v >> np.uint32(16)) | np.uint32(0x40)
    return quiet if (v & np.uint32(_ABS)) > np.uint32(_F32_EXP) else rounded


@njit(cache=True, inline="always")
def _is_subnormal(h):
    """1 if the bf16 pattern ``h`` is subnormal (exponent 0, mantissa nonzero), else 0."""
    x = h & 0x7FFF
    return 1 if (x != 0) & (x <= 0x7F) else 0


@njit(cache=True, inline="always")
def _pair(u, row, k, K):
    """bf16 pair (k, k+1) of row ``row`` of the uint32 view ``u`` (row, k) as uint32
    (k in the low half; the high half zero when k + 1 == K), plus the subnormal flag."""
    lo = _bf16_bits(u[row, k])
    hi = _bf16_bits(u[row, k + 1]) if k + 1 < K else np.uint32(0)
    return np.uint32(lo | (hi << np.uint32(16))), _is_subnormal(lo) | _is_subnormal(hi)


def _round_vec(builder, v, flag):
    """IR: <n x i32> float32 patterns -> (<n x i16> bf16 patterns, flag | subnormal lanes).
    The rule of :func:`round_bf16` on whole vectors."""
    n = v.type.count
    i16v = ir.VectorType(ir.IntType(16), n)

    def splat(c, vt=v.type):
        return ir.Constant(vt, [c] * vt.count)

    lsb = builder.and_(builder.lshr(v, splat(16)), splat(1))
    rnd = builder.add(builder.add(v, splat(0x7FFF)), lsb)
    nan = builder.icmp_unsigned(">", builder.and_(v, splat(_ABS)), splat(_F32_EXP))
    sel = builder.select(nan, builder.or_(v, splat(0x00400000)), rnd)
    h = builder.trunc(builder.lshr(sel, splat(16)), i16v)
    mag = builder.and_(h, splat(0x7FFF, i16v))
    # subnormal: 1 <= mag <= 0x7F, i.e. mag - 1 < 0x7F unsigned
    sub = builder.icmp_unsigned("<", builder.sub(mag, splat(1, i16v)), splat(0x7F, i16v))
    return h, builder.or_(flag, builder.zext(sub, i16v))


def _any_lane(builder, flag):
    """IR: <n x i16> flag lanes -> i64 0/1."""
    n = flag.type.count
    nz = builder.icmp_unsigned("!=", flag, ir.Constant(flag.type, None))
    return builder.zext(builder.icmp_unsigned(
        "!=", builder.bitcast(nz, ir.IntType(n)), ir.Constant(ir.IntType(n), 0)), ir.IntType(64))


def _make_convert_pairs():
    """Intrinsic ``cvt_p16(U, off_lo, off_hi, D, d_off) -> uint64`` for an operand
    contiguous along N: 16 consecutive patterns at element offset ``off_lo`` from the
    data pointer of ``U`` (row 2 kp of B) and at ``off_hi`` (row 2 kp + 1) -> 16 bf16
    pairs stored at ``D[d_off:]``; returns nonzero if one is subnormal.  (The same loop
    written in Numba was not vectorized: ~25% slower GEMM for B = dout.)"""

    @intrinsic
    def cvt_p16(typingctx, U, off_lo, off_hi, D, d_off):
        sig = types.uint64(U, off_lo, off_hi, D, d_off)

        def codegen(context, builder, signature, args):
            U_, lo_, hi_, D_, d_off_ = args
            v16 = ir.VectorType(ir.IntType(32), 16)
            u_ptr = context.make_array(signature.args[0])(context, builder, U_).data
            d_ptr = context.make_array(signature.args[3])(context, builder, D_).data
            flag = ir.Constant(ir.VectorType(ir.IntType(16), 16), None)
            halves = []
            for off in (lo_, hi_):
                v = builder.load(builder.bitcast(builder.gep(u_ptr, [off]), v16.as_pointer()),
                                 align=4)
                h, flag = _round_vec(builder, v, flag)
                halves.append(builder.zext(h, v16))
            w = builder.or_(halves[0], builder.shl(halves[1], ir.Constant(v16, [16] * 16)))
            builder.store(w, builder.bitcast(builder.gep(d_ptr, [d_off_]), v16.as_pointer()),
                          align=4)
            return _any_lane(builder, flag)

        return sig, codegen

    return cvt_p16


_cvt_p16 = _make_convert_pairs()


def _make_convert_transpose():
    """Intrinsic ``cvt_t16(U, u_off, ld, D, d_off, dld) -> uint64`` for an operand
    contiguous along K.

    ``U`` is the (N, K) uint32 view of B.T (or of A); offsets are in elements from its
    data pointer (strides / 4, possibly negative), and the caller keeps them inside the
    array (no bounds check here).  Reads 16 rows (row c = column n0 + c of B at
    ``u_off + c * ld``, 32 consecutive k each), rounds them to bf16 pairs (16 pairs of
    one column per 512-bit vector), transposes the 16 x 16 pair block in registers and
    stores row q (pair q of the 16 columns) at ``D[d_off + q * dld : +16]``.  Returns
    nonzero if a rounded value is subnormal.  Why: converting straight into the panel's
    strided lanes in Numba cost ~25 ms per 4096 x 4096 B (scalar, no vectorization);
    a vectorized conversion plus a scalar transpose still cost ~12 ms.
    """

    @intrinsic
    def cvt_t16(typingctx, U, u_off, ld, D, d_off, dld):
        sig = types.uint64(U, u_off, ld, D, d_off, dld)

        def codegen(context, builder, signature, args):
            U_, u_off_, ld_, D_, d_off_, dld_ = args
            i64 = ir.IntType(64)
            v32 = ir.VectorType(ir.IntType(32), 32)
            v16 = ir.VectorType(ir.IntType(32), 16)
            h32 = ir.VectorType(ir.IntType(16), 32)
            u_ptr = context.make_array(signature.args[0])(context, builder, U_).data
            d_ptr = context.make_array(signature.args[3])(context, builder, D_).data

            flag = ir.Constant(h32, None)
            rows = []
            for c in range(16):
                off = builder.add(u_off_, builder.mul(ld_, ir.Constant(i64, c)))
                v = builder.load(builder.bitcast(builder.gep(u_ptr, [off]), v32.as_pointer()),
                                 align=4)
                h, flag = _round_vec(builder, v, flag)
                rows.append(builder.bitcast(h, v16))
            # 16 x 16 transpose of i32 lanes: swapping off-diagonal b x b blocks for
            # b = 8, 4, 2, 1 sends element (i, l) to (l, i)
            for b in (8, 4, 2, 1):
                lo_mask = [l if not (l & b) else 16 + l - b for l in range(16)]
                hi_mask = [l + b if not (l & b) else 16 + l for l in range(16)]
                for i in range(16):
                    if i & b:
                        continue
                    x, y = rows[i], rows[i + b]
                    rows[i] = builder.shuffle_vector(x, y, ir.Constant(v16, lo_mask))
                    rows[i + b] = builder.shuffle_vector(x, y, ir.Constant(v16, hi_mask))
            for q in range(16):
                off = builder.add(d_off_, builder.mul(dld_, ir.Constant(i64, q)))
                builder.store(rows[q], builder.bitcast(builder.gep(d_ptr, [off]), v16.as_pointer()),
                              align=4)
            return _any_lane(builder, flag)

        return sig, codegen

    return cvt_t16


_cvt_t16 = _make_convert_transpose()


@njit(cache=True, inline="always")
def _pack_panel(ut, n0, W, KP, dst, d0, dld):
    """Rows n0 .. n0 + W of ``ut`` -> bf16 pairs ``dst[d0 + kp * dld + j]`` (uint32) for
    kp < KP, j < W; rows past the end of ``ut`` are zero.

    ``ut`` is the (N, K) uint32 view of an operand's transpose, so its rows are the
    columns of B (or the rows of A): pair kp of row n is ``(ut[n, 2 kp], ut[n, 2 kp + 1])``
    rounded, the high half zero when 2 kp + 1 == K.  Contiguous layouts go 16 x 16 (along
    K) or 16 x 1 (along N) through the vector intrinsics; the edges and any other strides
    through the scalar loop.  Returns 1 if a bf16-subnormal value was seen."""
    N, K = ut.shape
    nc = max(0, min(W, N - n0))
    sub = 0
    for kp in range(KP):
        for j in range(nc, W):
            dst[d0 + kp * dld + j] = 0
    q_done = 0
    j_done = 0
    if ut.strides[1] == 4 and ut.strides[0] % 4 == 0:
        # contiguous along K (B = w.T, A = dout): 16 x 16 blocks converted and transposed.
        # 16 rows at a time along all of K: 16 sequential read streams (64 at once ran at
        # under half the read bandwidth once B no longer fitted in L3: 7.1 ms -> 2.9 ms,
        # the time of w.sum(), for a 4096 x 4096 B on one core)
        ld = ut.strides[0] // 4
        j_done = (nc // 16) * 16
        q_done = ((K // 2) // 16) * 16
        for j0 in range(0, j_done, 16):
            for q0 in range(0, q_done, 16):
                if _cvt_t16(ut, (n0 + j0) * ld + 2 * q0, ld, dst, d0 + q0 * dld + j0, dld):
                    sub = 1
    elif ut.strides[0] == 4 and ut.strides[1] % 4 == 0:
        # contiguous along N (B = dout, A = x.T): rows 2 kp and 2 kp + 1, 16 lanes at a time
        ldk = ut.strides[1] // 4
        j_done = (nc // 16) * 16
        q_done = K // 2
        for kp in range(q_done):
            for j0 in range(0, j_done, 16):
                off = (n0 + j0) + 2 * kp * ldk
                if _cvt_p16(ut, off, off + ldk, dst, d0 + kp * dld + j0):
                    sub = 1
    # scalar rest: pairs [q_done, KP) of every row, rows [j_done, nc) of pairs < q_done
    for kp in range(q_done, KP):
        for j in range(nc):
            w, s = _pair(ut, n0 + j, 2 * kp, K)
            dst[d0 + kp * dld + j] = w
            sub |= s
    for kp in range(q_done):
        for j in range(j_done, nc):
            w, s = _pair(ut, n0 + j, 2 * kp, K)
            dst[d0 + kp * dld + j] = w
            sub |= s
    return sub


@njit(cache=True, parallel=True)
def _pack_a(au, ap):
    """A (M, K) as its uint32 view ``au`` -> ap (KP, MA) uint32: ``ap[kp, m]`` the bf16
    pair (2 kp, 2 kp + 1) of row m, rows M .. MA zero.  Parallel over chunks of 64 rows.
    Returns the number of chunks holding a bf16-subnormal value."""
    KP, MA = ap.shape
    apf = ap.reshape(KP * MA)
    n_chunks = (MA + 63) // 64
    flags = np.zeros(n_chunks, dtype=np.int64)
    for c in prange(n_chunks):
        m0 = c * 64
        flags[c] = _pack_panel(au, m0, min(64, MA - m0), KP, apf, m0, MA)
    return flags.sum()


# ---------------------------------------------------------------------------
# The micro-kernel: LLVM vector IR around vdpbf16ps
# ---------------------------------------------------------------------------

class _BFloatType(ir.Type):
    """LLVM's ``bfloat`` scalar type, which llvmlite.ir (0.50) does not define.

    Route chosen: numba hands LLVM the module as IR *text*, so a type that prints as
    ``bfloat`` is all that is needed; the intrinsic's LLVM 17+ signature
    ``<16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>,
    <32 x bfloat>)`` is then declared as is, and the packed uint32 lanes are bitcast
    ``<16 x i32> -> <32 x bfloat>`` (same 512 bits, a legal bitcast; pair order (low,
    high) = elements (2i, 2i+1)).  Preferred to inline asm: LLVM still schedules,
    allocates registers and folds the A broadcast into the instruction
    (``vdpbf16ps zmm, zmm, dword ptr [..]{1to16}``).
    """

    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, _BFloatType)

    def __hash__(self):
        return hash("bfloat")


def _make_tile(R, P):
    """Intrinsic ``tile(A, a_off, lda, B, b_off, KP, C, c_off, ldc)`` for an R x (16 P) tile.

    ``A`` flat uint32 packed A: pair kp of row r at ``a_off + kp * lda + r``;
    ``B`` flat uint32 column panel: pair kp of column j at ``b_off + kp * 16 P + j``;
    ``C`` flat float32: row r, column j at ``c_off + r * ldc + j`` (overwritten).
    Accumulates over the KP pairs in R * P zmm registers, then stores them.
    """

    @intrinsic
    def tile(typingctx, A, a_off, lda, B, b_off, KP, C, c_off, ldc):
        sig = types.void(A, a_off, lda, B, b_off, KP, C, c_off, ldc)

        def codegen(context, builder, signature, args):
            A_, a_off_, lda_, B_, b_off_, KP_, C_, c_off_, ldc_ = args
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)
            f32 = ir.FloatType()
            vi = ir.VectorType(i32, 16)
            vf = ir.VectorType(f32, 16)
            vb = ir.VectorType(_BFloatType(), 32)
            a_ptr = context.make_array(signature.args[0])(context, builder, A_).data
            b_ptr = context.make_array(signature.args[3])(context, builder, B_).data
            c_ptr = context.make_array(signature.args[6])(context, builder, C_).data
            dp = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vf, [vf, vb, vb]),
                "llvm.x86.avx512bf16.dpbf16ps.512")
            zero_v = ir.Constant(vf, None)
            undef_i = ir.Constant(vi, ir.Undefined)
            splat_mask = ir.Constant(vi, [0] * 16)
            nr = ir.Constant(i64, 16 * P)

            entry = builder.block
            loop = builder.append_basic_block("bf16_tile_loop")
            done = builder.append_basic_block("bf16_tile_done")
            builder.cbranch(builder.icmp_signed(">", KP_, ir.Constant(i64, 0)), loop, done)

            builder.position_at_end(loop)
            kp = builder.phi(i64, name="kp")
            kp.add_incoming(ir.Constant(i64, 0), entry)
            accs = [[builder.phi(vf) for _ in range(P)] for _ in range(R)]
            for row in accs:
                for phi in row:
                    phi.add_incoming(zero_v, entry)
            bbase = builder.add(b_off_, builder.mul(kp, nr))
            bvec = []
            for p in range(P):
                off = builder.add(bbase, ir.Constant(i64, 16 * p))
                vptr = builder.bitcast(builder.gep(b_ptr, [off]), vi.as_pointer())
                bvec.append(builder.bitcast(builder.load(vptr, align=4), vb))
            abase = builder.add(a_off_, builder.mul(kp, lda_))
            new = []
            for r in range(R):
                aw = builder.load(builder.gep(a_ptr, [builder.add(abase, ir.Constant(i64, r))]),
                                  align=4)
                a_splat = builder.shuffle_vector(
                    builder.insert_element(undef_i, aw, ir.Constant(i32, 0)), undef_i, splat_mask)
                a_b = builder.bitcast(a_splat, vb)
                new.append([builder.call(dp, [accs[r][p], a_b, bvec[p]]) for p in range(P)])
            kp_next = builder.add(kp, ir.Constant(i64, 1))
            loop_end = builder.block
            kp.add_incoming(kp_next, loop_end)
            for r in range(R):
                for p in range(P):
                    accs[r][p].add_incoming(new[r][p], loop_end)
            builder.cbranch(builder.icmp_signed("<", kp_next, KP_), loop, done)

            builder.position_at_end(done)
            results = []
            for r in range(R):
                for p in range(P):
                    res = builder.phi(vf)  # every phi before the first store
                    res.add_incoming(zero_v, entry)
                    res.add_incoming(new[r][p], loop_end)
                    results.append((r, p, res))
            for r, p, res in results:
                off = builder.add(builder.add(c_off_, builder.mul(ldc_, ir.Constant(i64, r))),
                                  ir.Constant(i64, 16 * p))
                dst = builder.bitcast(builder.gep(c_ptr, [off]), vf.as_pointer())
                builder.store(res, dst, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile = _make_tile(TILE_R, TILE_P)


@njit(cache=True, parallel=True)
def _gemm(ap, but, tiles_per_block, out):
    """out (M, N) float32 C-contiguous = packed A ``ap`` (KP, MA) (from :func:`_pack_a`,
    MA >= M rounded up to TILE_R) times B, whose transpose's uint32 view is ``but`` (N, K).

    Tasks are (tiles_per_block * TILE_R rows) x (one NR-column panel); each packs its B
    panel (KP x NR, L1/L2 resident: B is read from memory once and never written back
    whole) and walks its rows TILE_R at a time over all of K.  (Walking K in chunks of
    64-512 pairs, BLIS-style, with the partial sums added per chunk, measured no faster
    on the 2-core machine for any backward shape, and slower for dx: kept simple.)  Returns the number of tasks whose B
    panel held a bf16-subnormal value."""
    M, N = out.shape
    KP, MA = ap.shape
    R = TILE_R
    MT = MA // R
    n_panels = (N + NR - 1) // NR
    m_blocks = (MT + tiles_per_block - 1) // tiles_per_block
    apf = ap.reshape(KP * MA)
    of = out.reshape(M * N)
    flags = np.zeros(n_panels * m_blocks, dtype=np.int64)
    for t in prange(n_panels * m_blocks):
        mb = t // n_panels
        n0 = (t % n_panels) * NR
        bp = np.empty(KP * NR, dtype=np.uint32)
        flags[t] = _pack_panel(but, n0, NR, KP, bp, 0, NR)
        tmp = np.empty(R * NR, dtype=np.float32)
        full_cols = n0 + NR <= N
        for i in range(mb * tiles_per_block, min(MT, (mb + 1) * tiles_per_block)):
            m0 = i * R
            if full_cols and m0 + R <= M:
                _tile(apf, m0, MA, bp, 0, KP, of, m0 * N + n0, N)
            else:  # edge tile: compute into tmp, copy the part inside out
                _tile(apf, m0, MA, bp, 0, KP, tmp, 0, NR)
                for r in range(min(R, M - m0)):
                    for j in range(min(NR, N - n0)):
                        out[m0 + r, n0 + j] = tmp[r * NR + j]
    return flags.sum()


def _matmul_kernel(a, b, out):
    """Validated a (M, K), b (K, N) float32, out (M, N) float32 C-contiguous, all sizes
    >= 1.  Returns False (out unspecified) when an operand rounds to a bf16 subnormal,
    which the instruction would read as zero."""
    M, K = a.shape
    N = b.shape[1]
    MT = -(-M // TILE_R)
    ap = np.empty(((K + 1) // 2, MT * TILE_R), dtype=np.uint32)
    if _pack_a(a.view(np.uint32), ap):
        return False
    n_panels = -(-N // NR)
    m_blocks = min(MT, -(-MIN_TASKS // n_panels))
    return not _gemm(ap, b.T.view(np.uint32), -(-MT // m_blocks), out)


# ---------------------------------------------------------------------------
# Availability and the public entry point
# ---------------------------------------------------------------------------

_available = None


def _target_has_bf16():
    """True when Numba compiles for this very CPU and it has AVX512-BF16.

    Numba's target is the host CPU model with the host's features unless NUMBA_CPU_NAME
    / NUMBA_CPU_FEATURES (portable caches) or NUMBA_ENABLE_AVX=0 say otherwise; under
    such an override the kernel is not tried: with NUMBA_CPU_NAME=generic, LLVM could
    not lower the 512-bit intrinsic and aborted the process ("Do not know how to split
    the result of this operator"), which no ``except`` catches."""
    try:
        import llvmlite.binding as llb
        import numba
        cfg = numba.config
        if cfg.CPU_NAME is not None or cfg.CPU_FEATURES is not None or not cfg.ENABLE_AVX:
            return False
        return bool(llb.get_host_cpu_features().get("avx512bf16", False))
    except Exception:
        return False


def _self_check():
    """A tiny product through the kernel, compared with the definition: edge tiles, odd K,
    strided operands, exact +-1 x integers."""
    rng = np.random.default_rng(0)
    M, K, N = TILE_R + 1, 7, NR + 3
    a = np.where(rng.random((K, M)) < 0.5, -1.0, 1.0).astype(np.float32).T
    b = rng.integers(-8, 9, (K, N)).astype(np.float32)
    out = np.empty((M, N), np.float32)
    return _matmul_kernel(a, b, out) and np.array_equal(out, a @ b)


def available():
    """True when this CPU has AVX512-BF16, Numba compiles for it, and the kernel
    compiled and passed a tiny self-check (done once, then remembered).  Never raises.
    The feature test comes first: compiling or running the kernel without the
    instruction would abort in LLVM or die of SIGILL, which no ``except`` catches."""
    global _available
    if _available is None:
        ok = False
        if _target_has_bf16():
            try:
                ok = bool(_self_check())
            except Exception:
                ok = False
        _available = ok
    return _available


def _check_operand(x, name):
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy float32 array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise ValueError(f"{name} must have dtype float32, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")


def matmul(a, b, out=None):
    """``round_bf16(a) @ round_bf16(b)`` with float32 accumulation.

    a: (M, K) float32, b: (K, N) float32, any strides (transposed views are read in
    place); out: None or a float32 C-contiguous (M, N) array, written and returned.
    Returns (M, N) float32 C-contiguous.  NaN and inf propagate as in a float GEMM.
    Uses the AVX512-BF16 kernel when :func:`available`, else (and for operands with a
    bf16-subnormal value) the same definition in NumPy.  ValueError names the bad input.
    """
    _check_operand(a, "a")
    _check_operand(b, "b")
    M, K = a.shape
    if b.shape[0] != K:
        raise ValueError(f"b must have {K} rows to match a's shape {a.shape}, got shape {b.shape}")
    N = b.shape[1]
    if out is None:
        out = np.empty((M, N), dtype=np.float32)
    elif not (isinstance(out, np.ndarray) and out.dtype == np.float32
              and out.shape == (M, N) and out.flags.c_contiguous and out.flags.writeable):
        got = (f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray)
               else type(out).__name__)
        raise ValueError(f"out must be a writeable C-contiguous float32 array of shape "
                         f"{(M, N)}, got {got}")
    if M == 0 or N == 0:
        return out
    if K == 0:
        out[...] = 0
        return out
    # the kernel packs B panel by panel while other tasks write out: never let them alias
    dst = out if not (np.may_share_memory(out, a) or np.may_share_memory(out, b)) \
        else np.empty_like(out)
    if not (available() and _matmul_kernel(a, b, dst)):
        _matmul_numpy(a, b, dst)
    if dst is not out:
        out[...] = dst
    return out
