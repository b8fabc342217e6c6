// run.mjs PART JOB.json OUT.json: llama.cpp, through its npm bindings, on a groundc GGUF export
// (tests/gguf_llamacpp.py writes the job and judges the output). Each binding ships its own
// ggml, so each PART runs in a process of its own:
//   text    node-llama-cpp, model.gguf: the token ids of the prompts and the raw logits of
//           every position of the text prompt
//   image   @fugood/llama.node, model.gguf + mmproj.gguf: the full next-token distribution
//           after the image prompt, and after the text prompt (to tie its probabilities to
//           node-llama-cpp's logits), each in a fresh context; the chat template as llama.cpp
//           renders it
// Everything runs on the CPU with f32 KV caches, so that only the weights' type differs from
// groundc.
import fs from "node:fs";

const [part, jobPath, outPath] = process.argv.slice(2);
const job = JSON.parse(fs.readFileSync(jobPath, "utf8"));
const out = {};

if (part === "text") {
    const {getLlama, LlamaLogLevel} = await import("node-llama-cpp");
    const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
    const model = await llama.loadModel({modelPath: job.model, gpuLayers: 0});
    const ctx = await model.createContext({
        contextSize: job.context,
        batchSize: job.context,
        threads: 2,
        flashAttention: false,
        experimentalKvCacheKeyType: "F32",
        experimentalKvCacheValueType: "F32",
    });
    const ids = (text) => [model.tokens.bos, ...Array.from(model.tokenize(text, false))];
    const text = ids(job.text_prompt);
    const res = await ctx.getSequence().controlledEvaluate(
        text.map((t) => [t, {generateNext: {logits: true}}]));
    const logits = res.map((r) => {
        const row = new Array(job.vocab).fill(null);
        for (const [t, v] of r.next.logits) row[t] = v;
        return row;
    });
    out.text = {ids: text, logits};
    out.image_text_ids = ids(job.image_prompt.replace(job.marker, ""));
    await ctx.dispose();
    await model.dispose();
    await llama.dispose();
} else if (part === "image") {
    const {loadModel} = await import("@fugood/llama.node");
    // Sampling that leaves softmax(logits) as it is: every token, temperature 1, no filters.
    const plain = {n_predict: 1, n_probs: job.vocab, temperature: 1, top_k: 0, top_p: 1,
                   min_p: 0, typ_p: 1, penalty_repeat: 1, penalty_last_n: 0, seed: 1};
    // A fresh context per prompt: one that reuses a cached prefix across a media prompt gave
    // other probabilities.
    const open = () => loadModel({model: job.model, n_ctx: job.context, n_batch: job.context,
                                  n_threads: 2, n_gpu_layers: 0, cache_type_k: "f32",
                                  cache_type_v: "f32", flash_attn_type: "off"});
    let ctx = await open();
    out.chat = ctx.getFormattedChat(job.chat, null, {jinja: true, add_generation_prompt: true}).prompt;
    const text = await ctx.completion({prompt: job.text_prompt, ...plain});
    out.text_probs = text.completion_probabilities[0].probs;
    await ctx.release();
    ctx = await open();
    if (!(await ctx.initMultimodal({path: job.mmproj, use_gpu: false})))
        throw new Error(`${job.mmproj}: llama.cpp's mtmd did not load it`);
    const image = await ctx.completion({prompt: job.image_prompt, media_paths: [job.image], ...plain});
    out.image_probs = image.completion_probabilities[0].probs;
    // Not released: releasing the multimodal context crashed about one exit in five
    // (@fugood/llama.node 1.7.15); the process ends right after the output is written.
} else {
    throw new Error(`run.mjs: unknown part '${part}' (text or image)`);
}

fs.writeFileSync(outPath, JSON.stringify(out));
process.exit(0);
