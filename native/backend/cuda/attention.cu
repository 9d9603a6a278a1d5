// attention.cu — see attention.cuh.
// Block = one kv head × a tile of BQ=16 "rows", where a row is a (query row m,
// query head g of the kv head's group) pair: GQA query heads that share a kv
// head share every K/V tile that the block stages (Llama-3: 4 heads per tile).
// 128 threads: 8 per row. Per tile of BKV=32 positions: scores (each thread 4
// keys, dot over hd from shared memory), row max/sum across the row's 8 lanes
// by shuffles, P to shared memory, O[row][c] (c = lane8 + 8i) rescaled and
// accumulated in registers. grid.z > 1 splits the key range (decode) and writes
// unnormalized partials (o, max, sum) that attn_merge_kernel combines.
#include "attention.cuh"

#include <cmath>

namespace shoal {
namespace cuda {
namespace {

constexpr int BQ = 16, BKV = 32, kThreads = 128, kMaxHd = 256;

struct AttnArgs {
    const __half * q;
    const __half * kc;
    const __half * vc;
    __half * out;
    float * part;
    int M, H, Hkv, hd, pos0, group, tiles_per_split;
    float scale;
    int window; // > 0: row m sees positions max(0, pos0+m−window+1)..pos0+m
    int slots;  // > 0: a ring cache, position p at row p % slots
};

__global__ void __launch_bounds__(kThreads) attn_kernel(const AttnArgs a) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int hd = a.hd, ldh = hd + 2, kv_dim = a.Hkv * hd;
    __half * qs = reinterpret_cast<__half *>(smem_raw); // [BQ][ldh]
    __half * ks = qs + BQ * ldh;                         // [BKV][ldh]
    __half * vs = ks + BKV * ldh;                        // [BKV][ldh]
    float * ps = reinterpret_cast<float *>(vs + BKV * ldh); // [BQ][BKV]

    const int kvh = blockIdx.y, rows = a.M * a.group, rho0 = blockIdx.x * BQ;
    const int t = threadIdx.x, r = t >> 3, sub = t & 7;
    const int rho = rho0 + r;
    const bool valid = rho < rows;
    const int m = valid ? rho / a.group : 0;
    const int h = kvh * a.group + (valid ? rho % a.group : 0);
    const int my_last = a.pos0 + m; // last position row m may see
    const int my_first = a.window > 0 ? max(0, my_last - a.window + 1) : 0;
    const int n_kv = a.pos0 + (min(rho0 + BQ, rows) - 1) / a.group + 1;
    // the block's first row has the earliest window
    const int base = a.window > 0 ? max(0, a.pos0 + rho0 / a.group - a.window + 1) : 0;
    const int begin = base + blockIdx.z * a.tiles_per_split * BKV;
    const int end = min(n_kv, begin + a.tiles_per_split * BKV);

    for (int i = t; i < BQ * hd; i += kThreads) {
        const int rr = i / hd, c = i % hd, rh = rho0 + rr;
        __half v = __float2half(0.0f);
        if (rh < rows) v = a.q[((int64_t)(rh / a.group) * a.H + kvh * a.group + rh % a.group) * hd + c];
        qs[rr * ldh + c] = v;
    }

    float m_run = -INFINITY, l_run = 0.0f;
    float o[kMaxHd / 8];
#pragma unroll
    for (int i = 0; i < kMaxHd / 8; i++) o[i] = 0.0f;

    const int hd2 = hd / 2, ldh2 = ldh / 2;
    const __half2 * qs2 = reinterpret_cast<const __half2 *>(qs);
    for (int t0 = begin; t0 < end; t0 += BKV) {
        __syncthreads(); // Q staged / previous tile consumed
        for (int i = t; i < BKV * hd2; i += kThreads) {
            const int j = i / hd2, c2 = i % hd2, pos = t0 + j;
            __half2 kv2 = __float2half2_rn(0.0f), vv2 = kv2;
            if (pos < end) {
                const int64_t off = (int64_t)(a.slots > 0 ? pos % a.slots : pos) * kv_dim + (int64_t)kvh * hd;
                kv2 = reinterpret_cast<const __half2 *>(a.kc + off)[c2];
                vv2 = reinterpret_cast<const __half2 *>(a.vc + off)[c2];
            }
            reinterpret_cast<__half2 *>(ks)[j * ldh2 + c2] = kv2;
            reinterpret_cast<__half2 *>(vs)[j * ldh2 + c2] = vv2;
        }
        __syncthreads();
        float s[BKV / 8], tmax = -INFINITY;
#pragma unroll
        for (int i = 0; i < BKV / 8; i++) {
            const int j = sub + 8 * i, pos = t0 + j;
            s[i] = -INFINITY;
            if (valid && pos < end && pos <= my_last && pos >= my_first) {
                const __half2 * k2 = reinterpret_cast<const __half2 *>(ks) + j * ldh2;
                float acc = 0.0f;
                for (int d = 0; d < hd2; d++) {
                    const float2 qf = __half22float2(qs2[r * ldh2 + d]), kf = __half22float2(k2[d]);
                    acc = fmaf(qf.x, kf.x, acc);
                    acc = fmaf(qf.y, kf.y, acc);
                }
                s[i] = acc * a.scale;
            }
            tmax = fmaxf(tmax, s[i]);
        }
#pragma unroll
        for (int o8 = 4; o8 > 0; o8 >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o8));
        const float m_new = fmaxf(m_run, tmax);
        float alpha = 1.0f, psum = 0.0f;
        if (m_new != -INFINITY) {
            alpha = expf(m_run - m_new); // 0 when m_run is -inf
#pragma unroll
            for (int i = 0; i < BKV / 8; i++) {
                s[i] = expf(s[i] - m_new);
                psum += s[i];
            }
        } else {
#pragma unroll
            for (int i = 0; i < BKV / 8; i++) s[i] = 0.0f;
        }
#pragma unroll
        for (int o8 = 4; o8 > 0; o8 >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, o8);
        l_run = l_run * alpha + psum;
        m_run = m_new;
#pragma unroll
        for (int i = 0; i < BKV / 8; i++) ps[r * BKV + sub + 8 * i] = s[i];
        __syncwarp();
        const int nj = min(BKV, end - t0);
#pragma unroll
        for (int ci = 0; ci < kMaxHd / 8; ci++) {
            const int c = sub + 8 * ci;
            if (ci * 8 < hd && c < hd) {
                float acc = o[ci] * alpha;
                for (int j = 0; j < nj; j++) acc = fmaf(ps[r * BKV + j], __half2float(vs[j * ldh + c]), acc);
                o[ci] = acc;
            }
        }
        __syncwarp();
    }
    if (!valid) return;
    const int64_t mh = (int64_t)m * a.H + h;
    if (gridDim.z == 1) {
        const float inv = 1.0f / l_run;
#pragma unroll
        for (int ci = 0; ci < kMaxHd / 8; ci++) {
            const int c = sub + 8 * ci;
            if (ci * 8 < hd && c < hd) a.out[mh * hd + c] = __float2half(o[ci] * inv);
        }
    } else {
        float * p = a.part + ((int64_t)blockIdx.z * a.M * a.H + mh) * (hd + 2);
#pragma unroll
        for (int ci = 0; ci < kMaxHd / 8; ci++) {
            const int c = sub + 8 * ci;
            if (ci * 8 < hd && c < hd) p[c] = o[ci];
        }
        if (sub == 0) {
            p[hd] = m_run;
            p[hd + 1] = l_run;
        }
    }
}

// One block per (m, h): out = Σ_z e^(m_z − M)·o_z / Σ_z e^(m_z − M)·l_z.
__global__ void attn_merge_kernel(const float * __restrict__ part, int n_split, int64_t MH, int hd, __half * __restrict__ out) {
    const int64_t mh = blockIdx.x;
    float mx = -INFINITY;
    for (int z = 0; z < n_split; z++) mx = fmaxf(mx, part[(z * MH + mh) * (hd + 2) + hd]);
    float l = 0.0f;
    for (int z = 0; z < n_split; z++) {
        const float * p = part + (z * MH + mh) * (hd + 2);
        if (p[hd] != -INFINITY) l += expf(p[hd] - mx) * p[hd + 1];
    }
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float acc = 0.0f;
        for (int z = 0; z < n_split; z++) {
            const float * p = part + (z * MH + mh) * (hd + 2);
            if (p[hd] != -INFINITY) acc += expf(p[hd] - mx) * p[c];
        }
        out[mh * hd + c] = __float2half(acc / l);
    }
}

} // namespace

void attention(const __half * q, const __half * kc, const __half * vc, int64_t M, int pos0, int n_heads, int n_kv_heads,
               int head_dim, float scale, __half * out, float * part, int target_blocks, cudaStream_t stream, int window,
               int slots) {
    SHOAL_CUDA_ASSERT(M > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0 && head_dim > 0 && head_dim % 2 == 0 &&
                      head_dim <= kMaxHd && pos0 >= 0 && q && kc && vc && out && window >= 0 && slots >= 0 &&
                      (slots == 0 || (window > 0 && slots >= window + M - 1)),
                      "attention: need H % Hkv == 0, head_dim even and <= 256");
    const int group = n_heads / n_kv_heads;
    SHOAL_CUDA_ASSERT(M * group < (int64_t)1 << 30, "attention: too many rows");
    AttnArgs a{q, kc, vc, out, part, (int)M, n_heads, n_kv_heads, head_dim, pos0, group, 0, scale, window, slots};
    const int rows = (int)M * group;
    const unsigned row_tiles = ceil_div(rows, BQ);
    const int n_kv = pos0 + (int)M;
    // keys one block may span: all positions, or a window plus the block's rows
    const int span = window > 0 ? std::min(n_kv, window + (int)M - 1) : n_kv;
    const int tiles = (int)ceil_div(span, BKV);
    int n_split = 1;
    const int64_t blocks = (int64_t)row_tiles * n_kv_heads;
    if (part && M <= kAttnSplitMaxRows && blocks < target_blocks && tiles >= 4)
        n_split = (int)std::min<int64_t>({(int64_t)kAttnMaxSplit, (int64_t)tiles / 2, (target_blocks + blocks - 1) / blocks});
    n_split = std::max(1, n_split);
    a.tiles_per_split = (tiles + n_split - 1) / n_split;
    n_split = (tiles + a.tiles_per_split - 1) / a.tiles_per_split;
    const size_t smem = (size_t)(BQ + 2 * BKV) * (head_dim + 2) * sizeof(__half) + (size_t)BQ * BKV * sizeof(float);
    attn_kernel<<<dim3(row_tiles, n_kv_heads, n_split), kThreads, smem, stream>>>(a);
    CUDA_CHECK(cudaGetLastError());
    if (n_split > 1) {
        attn_merge_kernel<<<(unsigned)(M * n_heads), 128, 0, stream>>>(part, n_split, M * n_heads, head_dim, out);
        CUDA_CHECK(cudaGetLastError());
    }
}

} // namespace cuda
} // namespace shoal
