// run.mjs EXPORT_DIR CASES.json OUT.json: tokenizers.js loads EXPORT_DIR's tokenizer.json and
// tokenizer_config.json as a Hugging Face model folder is loaded, encodes every case's text
// (special tokens added as the post-processor says) and decodes every case's ids (special tokens
// skipped). tests/tokenizer_json_check.py writes the cases and judges the output.
import fs from "node:fs";
import {Tokenizer} from "@huggingface/tokenizers";

const [dir, casesPath, outPath] = process.argv.slice(2);
const read = (name) => JSON.parse(fs.readFileSync(`${dir}/${name}`, "utf8"));
const tokenizer = new Tokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
const cases = JSON.parse(fs.readFileSync(casesPath, "utf8"));
const out = cases.map((c) => ({
    ids: Array.from(tokenizer.encode(c.text).ids),
    decoded: c.decode_ids ? tokenizer.decode(c.decode_ids, {skip_special_tokens: true}) : null,
}));
fs.writeFileSync(outPath, JSON.stringify(out));
