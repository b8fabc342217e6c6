// test_lora.c: LoRA on the Llama linears (model/lora.h).
//   - a LoRA linear y = x W^T + s dropout(x) A^T B^T: forward against plain f64 loops, and
//     the gradients of x, W, A and B against central finite differences (f64, with and
//     without dropout);
//   - names, shapes and initialisation (A in U(-1/sqrt(in), 1/sqrt(in)), B zero,
//     deterministic from the seed; base weights identical to a model without LoRA);
//   - B = 0 at init: logits equal the base model's exactly;
//   - random B: the merged model's logits equal the LoRA model's (within 1e-4 of the largest
//     logit: f32 through two layers), the merged weights equal W + s B A computed here in
//     f64, and the merged model has no adapters;
//   - gm_llama_lora_select: gradients reach A and B only;
//   - the lora: config block: defaults, and file:line:column errors.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/llama.h"
#include "model/lora.h"
#include "testlib.h"
#include "train/model_config.h"

// N(0, scale^2) values into an f64 or f32 tensor.
static void fill_normal(ag_tensor *t, tl_rng *r, double scale) {
    int64_t n = ag_numel(t);
    double *v = malloc(sizeof *v * (size_t)n);
    float *f = malloc(sizeof *f * (size_t)n);
    for (int64_t i = 0; i < n; i++) f[i] = (float)(v[i] = tl_normal(r) * scale);
    ag_copy_from_host(t, t->dtype == AG_F64 ? (void *)v : (void *)f);
    free(v);
    free(f);
}

static double *host_f64(const ag_tensor *t) {
    double *v = malloc(sizeof *v * (size_t)ag_numel(t));
    ag_copy_to_host(t, v);
    return v;
}

// max(a, b) that keeps a NaN (fmax drops it, which would hide a broken value).
static double worse(double a, double b) {
    return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
}

// The f64 LoRA linear ----------------------------------------------------------------------
enum { N = 6, IN = 5, OUT = 4, R = 3 };
static const double SCALE = 1.75;

typedef struct {
    ag_tensor *x, *w, *a, *b; // (2, 3, IN) step leaf, (OUT, IN), (R, IN), (OUT, R) params
    double dropout;
} lin_case;

static ag_tensor *lin_forward(ag_ctx *ctx, const lin_case *c) {
    gm_lora_pair p = {c->a, c->b};
    return gm_lora_linear(ctx, c->x, c->w, &p, SCALE, c->dropout, 1234);
}

// sum(y * R) without a tape.
static double lin_loss(ag_ctx *ctx, const lin_case *c, const double *rw) {
    ag_no_grad_begin(ctx);
    ag_tensor *y = lin_forward(ctx, c);
    double s = 0;
    for (int64_t i = 0; i < ag_numel(y); i++) s += ag_item(y, i) * rw[i];
    ag_no_grad_end(ctx);
    return s;
}

static double max_fd_error(ag_ctx *ctx, const lin_case *c, ag_tensor *t, const double *analytic,
                           const double *rw) {
    double *v = host_f64(t), worst = 0;
    const double h = 1e-6;
    for (int64_t i = 0; i < ag_numel(t); i++) {
        double keep = v[i];
        v[i] = keep + h;
        ag_copy_from_host(t, v);
        double lp = lin_loss(ctx, c, rw);
        v[i] = keep - h;
        ag_copy_from_host(t, v);
        double lm = lin_loss(ctx, c, rw);
        v[i] = keep;
        ag_copy_from_host(t, v);
        double num = (lp - lm) / (2 * h);
        double err = fabs(analytic[i] - num) / (1e-5 + 1e-3 * fabs(num));
        worst = worse(worst, err);
    }
    free(v);
    return worst; // <= 1: within |a - n| <= 1e-5 + 1e-3 |n|
}

static void test_linear(double dropout) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    tl_rng rng = {7 + (uint64_t)(dropout * 100)};
    lin_case c = {.dropout = dropout};
    c.x = ag_new(ctx, AG_F64, AG_SHAPE(2, 3, IN));
    fill_normal(c.x, &rng, 1);
    ag_set_requires_grad(c.x, true);
    c.w = ag_param(ctx, "t.q_proj.weight", AG_F64, AG_SHAPE(OUT, IN));
    gm_lora_pair p = gm_lora_new(ctx, c.w, R);
    c.a = p.A, c.b = p.B;
    TL_CHECK(!strcmp(p.A->name, "t.q_proj.lora_A.weight") &&
                 !strcmp(p.B->name, "t.q_proj.lora_B.weight"),
             "names %s %s", p.A->name, p.B->name);
    ag_tensor *ps[3] = {c.w, c.a, c.b};
    for (int i = 0; i < 3; i++) {
        fill_normal(ps[i], &rng, 0.7);
        ag_set_trainable(ctx, ps[i], true);
    }
    double rw[N * OUT];
    for (int i = 0; i < N * OUT; i++) rw[i] = tl_normal(&rng);

    ag_tensor *y = lin_forward(ctx, &c);
    if (dropout == 0) { // forward against plain loops
        double *X = host_f64(c.x), *W = host_f64(c.w), *A = host_f64(c.a), *B = host_f64(c.b);
        double worst = 0;
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) {
                double ref = 0;
                for (int i = 0; i < IN; i++) ref += X[n * IN + i] * W[o * IN + i];
                for (int k = 0; k < R; k++) {
                    double xa = 0;
                    for (int i = 0; i < IN; i++) xa += X[n * IN + i] * A[k * IN + i];
                    ref += SCALE * xa * B[o * R + k];
                }
                worst = worse(worst, fabs(ag_item(y, n * OUT + o) - ref));
            }
        TL_CHECK(worst < 1e-12, "LoRA linear forward differs from the f64 loops by %g", worst);
        free(X), free(W), free(A), free(B);
    }
    ag_backward_from(ctx, y, ag_from_host(ctx, AG_F64, AG_SHAPE(2, 3, OUT), rw));
    double *g[4] = {host_f64(c.x->grad), host_f64(c.w->grad), host_f64(c.a->grad),
                    host_f64(c.b->grad)};
    ag_tensor *x = c.x;
    ag_step_reset(ctx); // the numeric side reruns forwards; x must outlive the reset
    double xv[N * IN];
    ag_copy_to_host(x, xv);
    c.x = ag_param(ctx, "x", AG_F64, AG_SHAPE(2, 3, IN));
    ag_copy_from_host(c.x, xv);
    ag_tensor *ts[4] = {c.x, c.w, c.a, c.b};
    const char *names[4] = {"x", "W", "A", "B"};
    for (int i = 0; i < 4; i++) {
        double e = max_fd_error(ctx, &c, ts[i], g[i], rw);
        TL_CHECK(e <= 1, "dropout %.1f: gradient of %s off finite differences (%.3g x tol)",
                 dropout, names[i], e);
        printf("lora linear, dropout %.1f: d%s within %.3g of the tolerance\n", dropout, names[i],
               e);
        free(g[i]);
    }
    ag_ctx_free(ctx);
}

// The decoder ----------------------------------------------------------------------------
static gm_llama_config small(int64_t rank) {
    gm_llama_config c = {.vocab = 37,
                         .dim = 16,
                         .n_layers = 2,
                         .n_heads = 4,
                         .n_kv_heads = 2,
                         .ffn = 24,
                         .max_seq = 16,
                         .rope_theta = 1e4,
                         .norm_eps = 1e-5};
    if (rank) c.lora = (gm_lora_config){rank, 3.0 * (double)rank, 0, GM_LORA_ALL_TARGETS};
    return c;
}

enum { TB = 2, TT = 9 };

static float *logits(ag_ctx *ctx, gm_llama *m, const int32_t *ids) {
    const int64_t V = m->cfg.vocab;
    float *out = malloc(sizeof(float) * (size_t)(TB * TT * V));
    ag_no_grad_begin(ctx);
    ag_tensor *x = gm_llama_embed(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(TB, TT), ids));
    ag_tensor *l = gm_llama_logits(ctx, m, gm_llama_hidden(ctx, m, x, gm_positions(ctx, TT)));
    ag_copy_to_host(l, out);
    ag_no_grad_end(ctx);
    ag_step_reset(ctx);
    return out;
}

static ag_tensor *base_of(gm_llama *m, int64_t l, int t) {
    gm_llama_layer *L = &m->layers[l];
    ag_tensor *w[GM_LORA_NTARGETS] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
    return w[t];
}

static void test_decoder(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_llama_config cb = small(0), cl = small(4);
    gm_llama *base = gm_llama_new(ctx, &cb, AG_F32), *lm = gm_llama_new(ctx, &cl, AG_F32);
    gm_llama_init(base, 5, 0.3);
    gm_llama_init(lm, 5, 0.3);
    const int64_t V = cb.vocab, C = cb.dim, F = cb.ffn;

    // names, shapes, init
    TL_CHECK(base->n_lora == 0 && lm->n_lora == 2 * 7 * 2 && lm->n_params == base->n_params,
             "lora tensors %d (base %d), params %d vs %d", lm->n_lora, base->n_lora, lm->n_params,
             base->n_params);
    const gm_lora_pair *q = &lm->layers[1].lora[GM_LORA_Q], *d = &lm->layers[1].lora[GM_LORA_DOWN];
    TL_CHECK(!strcmp(q->A->name, "model.layers.1.self_attn.q_proj.lora_A.weight") &&
                 !strcmp(q->B->name, "model.layers.1.self_attn.q_proj.lora_B.weight") &&
                 !strcmp(d->A->name, "model.layers.1.mlp.down_proj.lora_A.weight"),
             "names %s %s %s", q->A->name, q->B->name, d->A->name);
    TL_CHECK(q->A->shape[0] == 4 && q->A->shape[1] == C && q->B->shape[0] == C &&
                 q->B->shape[1] == 4 && d->A->shape[1] == F && d->B->shape[0] == C,
             "LoRA shapes");
    bool same_base = true;
    for (int i = 0; i < base->n_params; i++) {
        float *a = malloc(sizeof(float) * (size_t)ag_numel(base->params[i]));
        float *b = malloc(sizeof(float) * (size_t)ag_numel(base->params[i]));
        ag_copy_to_host(base->params[i], a);
        ag_copy_to_host(lm->params[i], b);
        same_base &= !memcmp(a, b, sizeof(float) * (size_t)ag_numel(base->params[i]));
        free(a), free(b);
    }
    TL_CHECK(same_base, "LoRA changed the base weights' initialisation");
    double lo = 1, hi = -1, sum = 0, sq = 0, bmax = 0;
    float buf[4 * 24];
    for (int i = 0; i < lm->n_lora; i += 2) {
        ag_tensor *A = lm->lora_params[i], *B = lm->lora_params[i + 1];
        double bound = 1 / sqrt((double)A->shape[1]);
        ag_copy_to_host(A, buf);
        for (int64_t k = 0; k < ag_numel(A); k++) {
            lo = fmin(lo, buf[k] / bound), hi = fmax(hi, buf[k] / bound);
            sum += buf[k] / bound, sq += (buf[k] / bound) * (buf[k] / bound);
        }
        ag_copy_to_host(B, buf);
        for (int64_t k = 0; k < ag_numel(B); k++) bmax = fmax(bmax, fabs(buf[k]));
    }
    double n_a = 2 * (4.0 * C * 6 + 4.0 * F); // elements of every A, both layers
    TL_CHECK(lo >= -1 && hi < 1 && lo < -0.9 && hi > 0.9, "A/bound in [%g, %g]", lo, hi);
    TL_CHECK(fabs(sum / n_a) < 0.1 && fabs(sq / n_a - 1.0 / 3) < 0.05,
             "A/bound mean %g, mean square %g (uniform: 0, 1/3)", sum / n_a, sq / n_a);
    TL_CHECK(bmax == 0, "B is not zero at init (max %g)", bmax);
    { // the same seed draws the same A, another seed another
        gm_llama *again = gm_llama_new(ctx, &cl, AG_F32), *other = gm_llama_new(ctx, &cl, AG_F32);
        gm_llama_init(again, 5, 0.3);
        gm_llama_init(other, 6, 0.3);
        float a0[64], a1[64], a2[64];
        ag_copy_to_host(lm->lora_params[0], a0);
        ag_copy_to_host(again->lora_params[0], a1);
        ag_copy_to_host(other->lora_params[0], a2);
        TL_CHECK(!memcmp(a0, a1, sizeof a0) && memcmp(a0, a2, sizeof a0),
                 "A is not a function of the seed");
        gm_llama_free(again);
        gm_llama_free(other);
    }

    // B = 0: the LoRA model is its base
    int32_t ids[TB * TT];
    tl_rng rng = {99};
    for (int i = 0; i < TB * TT; i++) ids[i] = (int32_t)tl_randint(&rng, V);
    float *l0 = logits(ctx, base, ids), *l1 = logits(ctx, lm, ids);
    bool equal = true;
    for (int64_t i = 0; i < TB * TT * V; i++) equal &= l0[i] == l1[i];
    TL_CHECK(equal, "B = 0, yet the LoRA model's logits differ from the base model's");

    // Gradients reach A and B only.
    TL_CHECK(gm_llama_lora_select(ctx, base) == 0 && base->embed->requires_grad == false,
             "select on a model without LoRA changed something");
    TL_CHECK(gm_llama_lora_select(ctx, lm) == lm->n_lora, "select count");
    for (int i = 0; i < lm->n_lora; i += 2) fill_normal(lm->lora_params[i + 1], &rng, 0.2);
    int32_t tgt[TB * TT];
    for (int i = 0; i < TB * TT; i++) tgt[i] = (int32_t)tl_randint(&rng, V);
    ag_tensor *loss = gm_llama_loss(ctx, lm, ag_from_host(ctx, AG_I32, AG_SHAPE(TB, TT), ids),
                                    ag_from_host(ctx, AG_I32, AG_SHAPE(TB, TT), tgt));
    ag_backward(ctx, loss);
    ag_step_reset(ctx);
    bool base_none = true, lora_all = true;
    for (int i = 0; i < lm->n_params; i++)
        base_none &= !lm->params[i]->requires_grad && !lm->params[i]->grad;
    for (int i = 0; i < lm->n_lora; i++) {
        ag_tensor *g = lm->lora_params[i]->grad;
        double mx = 0;
        for (int64_t k = 0; g && k < ag_numel(g); k++) mx = worse(mx, fabs(ag_item(g, k)));
        lora_all &= g && mx > 0 && isfinite(mx);
    }
    TL_CHECK(base_none, "a base weight is trainable or got a gradient");
    TL_CHECK(lora_all, "a LoRA tensor got no gradient");

    // Random B: merged == unmerged; merged W == W + s B A (f64 here).
    float *l2 = logits(ctx, lm, ids);
    double moved = 0;
    for (int64_t i = 0; i < TB * TT * V; i++) moved = worse(moved, fabs(l2[i] - l0[i]));
    TL_CHECK(moved > 1e-3 && isfinite(moved), "random B did not change the logits (%g)", moved);
    const double s = 3.0; // alpha / r
    double *ref[2][GM_LORA_NTARGETS];
    for (int64_t l = 0; l < 2; l++)
        for (int t = 0; t < GM_LORA_NTARGETS; t++) {
            ag_tensor *w = base_of(lm, l, t);
            const gm_lora_pair *p = &lm->layers[l].lora[t];
            int64_t o = w->shape[0], in = w->shape[1];
            float *W = malloc(sizeof(float) * (size_t)(o * in));
            float *A = malloc(sizeof(float) * (size_t)(4 * in)), *B = malloc(sizeof(float) * 4 * o);
            ag_copy_to_host(w, W), ag_copy_to_host(p->A, A), ag_copy_to_host(p->B, B);
            ref[l][t] = malloc(sizeof(double) * (size_t)(o * in));
            for (int64_t r = 0; r < o; r++)
                for (int64_t c = 0; c < in; c++) {
                    double ba = 0;
                    for (int k = 0; k < 4; k++) ba += (double)B[r * 4 + k] * A[k * in + c];
                    ref[l][t][r * in + c] = W[r * in + c] + s * ba;
                }
            free(W), free(A), free(B);
        }
    gm_llama_lora_merge(lm);
    TL_CHECK(lm->n_lora == 0 && lm->cfg.lora.rank == 0 && !lm->layers[0].lora[0].A,
             "the merged model still has adapters");
    double werr = 0;
    for (int64_t l = 0; l < 2; l++)
        for (int t = 0; t < GM_LORA_NTARGETS; t++) {
            ag_tensor *w = base_of(lm, l, t);
            for (int64_t k = 0; k < ag_numel(w); k++)
                werr = worse(werr,
                             fabs(ag_item(w, k) - ref[l][t][k]) / fmax(fabs(ref[l][t][k]), 1e-3));
            free(ref[l][t]);
        }
    TL_CHECK(werr < 1e-6, "merged weights off W + s B A by %g (relative)", werr);
    float *l3 = logits(ctx, lm, ids);
    double err = 0, mag = 0;
    for (int64_t i = 0; i < TB * TT * V; i++)
        err = worse(err, fabs(l3[i] - l2[i])), mag = worse(mag, fabs(l2[i]));
    TL_CHECK(err <= 1e-4 * fmax(mag, 1),
             "merged logits differ from the LoRA model's by %g (max %g)", err, mag);
    printf("decoder: merged vs LoRA logits max difference %.3g (logits up to %.3g)\n", err, mag);
    free(l0), free(l1), free(l2), free(l3);
    gm_llama_free(base);
    gm_llama_free(lm);
    ag_ctx_free(ctx);
}

// The lora: block -----------------------------------------------------------------------------
static gm_lora_config read_lora(const char *text) {
    char path[] = "/tmp/test_lora_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    tr_yaml *root = tr_yaml_load(path);
    gm_llama_config llm = small(0);
    gm_lora_config c;
    unlink(path); // the message keeps the name; the file is not needed again
    tr_lora_config_read(root, &llm, &c);
    if (tr_yaml_get(root, "lora")) tr_yaml_check_used(tr_yaml_get(root, "lora"));
    tr_yaml_free(root);
    return c;
}

static void test_config(void) {
    gm_lora_config c = read_lora("model: x\n");
    TL_CHECK(c.rank == 0, "no lora: block, rank %lld", (long long)c.rank);
    c = read_lora("lora: {rank: 8}\n");
    TL_CHECK(c.rank == 8 && c.alpha == 8 && c.dropout == 0 && c.targets == GM_LORA_ALL_TARGETS,
             "defaults: rank %lld alpha %g dropout %g targets %x", (long long)c.rank, c.alpha,
             c.dropout, c.targets);
    c = read_lora("lora:\n  rank: 2\n  alpha: 5\n  dropout: 0.1\n  targets: [v_proj, q_proj]\n");
    TL_CHECK(c.rank == 2 && c.alpha == 5 && c.dropout == 0.1 &&
                 c.targets == (1u << GM_LORA_Q | 1u << GM_LORA_V),
             "explicit: targets %x", c.targets);
    TL_EXPECT_FAIL(read_lora("lora: {rank: 0}\n"), ":1:", "lora.rank");
    TL_EXPECT_FAIL(read_lora("lora: {alpha: 4}\n"), "missing key 'rank'");
    TL_EXPECT_FAIL(read_lora("lora: {rank: 4, alpha: 0}\n"), "lora.alpha", "> 0");
    TL_EXPECT_FAIL(read_lora("lora: {rank: 4, dropout: 1.5}\n"), "lora.dropout");
    TL_EXPECT_FAIL(read_lora("lora:\n  rank: 4\n  targets: [q_proj, qkv]\n"), ":3:21:", "'qkv'");
    TL_EXPECT_FAIL(read_lora("lora:\n  rank: 4\n  targets: [q_proj, q_proj]\n"),
                   ":3:", "listed twice");
    TL_EXPECT_FAIL(read_lora("lora:\n  rank: 4\n  targets: []\n"), ":3:", "non-empty");
    TL_EXPECT_FAIL(read_lora("lora: {rank: 4, rnak: 3}\n"), "rnak");
    TL_EXPECT_FAIL(read_lora("lora: {rank: 17}\n"), "lora.rank"); // > min(dim, ffn) = 16
}

int main(void) {
    test_linear(0);
    test_linear(0.3);
    test_decoder();
    test_config();
    return tl_summary("test_lora");
}
