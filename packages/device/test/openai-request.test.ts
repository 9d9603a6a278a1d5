import t, { type Test } from 'tap';
import { parseChatRequest, parseCompletionRequest, paramPath } from '../src/http/openai-request.js';
import { OpenAIError, contextLengthExceeded, fromDeviceCode } from '../src/http/openai-errors.js';
import { parseResponsesRequest } from '../src/http/responses.js';

const chat = (extra: Record<string, unknown>) => ({ model: 'm', messages: [{ role: 'user', content: 'hi' }], ...extra });

function rejects(t: Test, f: () => unknown, param: string, re?: RegExp): void {
  try {
    f();
    t.fail(`expected a 400 for ${param}`);
  } catch (e) {
    t.ok(e instanceof OpenAIError, 'OpenAIError');
    const err = e as OpenAIError;
    t.equal(err.status, 400, `${param}: status 400`);
    t.equal(err.param, param, `param is ${param}`);
    t.equal(err.body().error.type, 'invalid_request_error');
    if (re) t.match(err.message, re);
  }
}

t.test('paramPath', async (t) => {
  t.equal(paramPath(['messages', 2, 'content', 0, 'type']), 'messages[2].content[0].type');
});

t.test('valid chat requests as the SDKs send them', async (t) => {
  const r = parseChatRequest(chat({
    messages: [
      { role: 'developer', content: [{ type: 'text', text: 'x' }] },
      { role: 'user', content: 'q' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'abc', type: 'function', function: { name: 'f', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 'abc', content: 'r' },
    ],
    temperature: 0.5, top_p: 0.9, seed: 7, presence_penalty: 0.5, frequency_penalty: -0.5, logit_bias: { '50': -100 },
    stop: ['\n\n', 'END'], max_completion_tokens: 12, max_tokens: 99, logprobs: true, top_logprobs: 3, n: 1,
    stream: true, stream_options: { include_usage: true }, user: 'u1', store: false,
    tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }], tool_choice: { type: 'function', function: { name: 'f' } },
  }));
  t.same(r.options, {
    temperature: 0.5, topP: 0.9, seed: 7, presencePenalty: 0.5, frequencyPenalty: -0.5, logitBias: { 50: -100 },
    stop: ['\n\n', 'END'], maxTokens: 12, logprobs: true, topLogprobs: 3,
    tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }], toolChoice: { name: 'f' },
  });
  t.ok(r.stream && r.includeUsage);
  t.same(parseChatRequest(chat({ stop: 'x' })).options.stop, ['x']);
  t.same(parseChatRequest(chat({ response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'object' }, strict: true } } })).options.responseFormat,
    { type: 'json_schema', name: 'a', schema: { type: 'object' }, strict: true });
});

t.test('bad parameters are 400s naming them', async (t) => {
  rejects(t, () => parseChatRequest(chat({ n: 2 })), 'n', /n=1/);
  rejects(t, () => parseChatRequest(chat({ temperature: 3 })), 'temperature');
  rejects(t, () => parseChatRequest(chat({ stop: ['a', 'b', 'c', 'd', 'e'] })), 'stop');
  rejects(t, () => parseChatRequest(chat({ top_logprobs: 2 })), 'top_logprobs', /logprobs/);
  rejects(t, () => parseChatRequest(chat({ logprobs: true, top_logprobs: 21 })), 'top_logprobs');
  rejects(t, () => parseChatRequest(chat({ logit_bias: { x: 1 } })), 'logit_bias.x');
  rejects(t, () => parseChatRequest(chat({ bogus: 1 })), 'bogus', /Unrecognized request argument/);
  rejects(t, () => parseChatRequest(chat({ messages: [] })), 'messages');
  rejects(t, () => parseChatRequest(chat({ messages: [{ role: 'robot', content: 'x' }] })), 'messages[0].role');
  rejects(t, () => parseChatRequest(chat({ messages: [{ role: 'tool', content: 'x' }] })), 'messages[0].tool_call_id');
  rejects(t, () => parseChatRequest(chat({ tool_choice: 'required' })), 'tool_choice', /needs 'tools'/);
  rejects(t, () => parseChatRequest(chat({ tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: { type: 'function', function: { name: 'g' } } })), 'tool_choice', /no tool named 'g'/);
  rejects(t, () => parseChatRequest(chat({ tools: [{ type: 'function', function: { name: 'bad name' } }] })), 'tools[0].function.name');
  rejects(t, () => parseChatRequest(chat({ response_format: { type: 'xml' } })), 'response_format.type');
  rejects(t, () => parseChatRequest([1, 2]), 'body');
});

t.test('completions', async (t) => {
  t.equal(parseCompletionRequest({ model: 'm', prompt: 'Once' }).prompt, 'Once');
  t.equal(parseCompletionRequest({ model: 'm', prompt: ['Once'] }).prompt, 'Once');
  t.same(parseCompletionRequest({ model: 'm', prompt: [1, 403] }).prompt, [1, 403]);
  t.same(parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: 2 }).options, { logprobs: true, topLogprobs: 2 });
  rejects(t, () => parseCompletionRequest({ model: 'm', prompt: 'x', echo: true }), 'echo');
  rejects(t, () => parseCompletionRequest({ model: 'm', prompt: 'x', best_of: 3 }), 'best_of');
  rejects(t, () => parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: 6 }), 'logprobs');
});

t.test('error shapes', async (t) => {
  const e = contextLengthExceeded(500, 16, 512, { promptParam: 'messages', maxTokensParam: 'max_completion_tokens' });
  t.equal(e.status, 400);
  t.same(Object.keys(e.body().error).sort(), ['code', 'message', 'param', 'type']);
  t.equal(e.code, 'context_length_exceeded');
  t.equal(e.param, 'max_completion_tokens', 'names the parameter that asked for too many tokens');
  t.match(e.message, /maximum context length is 512 tokens.*requested 516 tokens \(500 in the messages, 16 in the completion, asked for by 'max_completion_tokens'\).*at most 12/);
  const p = contextLengthExceeded(600, 0, 512, { promptParam: 'input' });
  t.equal(p.param, 'input', 'the prompt alone: names the prompt');
  t.match(p.message, /maximum context length is 512 tokens.*input resulted in 600 tokens/);
  const q = fromDeviceCode('QUEUE_FULL', 'full', { retryAfterSec: 2.2 });
  t.equal(q.status, 429);
  t.equal(q.headers['retry-after'], '3');
  t.equal(fromDeviceCode('GENERATION_FAILED', 'x').status, 500);
  t.equal(fromDeviceCode('INVALID_ARGS', 'x').status, 400);
});

t.test('the names of the token limit and of the prompt travel with the request (for context_length_exceeded); parallel_tool_calls', async (t) => {
  t.match(parseChatRequest(chat({ max_tokens: 5 })), { promptParam: 'messages', maxTokensParam: 'max_tokens', options: { maxTokens: 5 } });
  t.match(parseChatRequest(chat({ max_completion_tokens: 7, max_tokens: 5 })), { maxTokensParam: 'max_completion_tokens', options: { maxTokens: 7 } });
  t.match(parseCompletionRequest({ model: 'm', prompt: 'x', max_tokens: 3 }), { promptParam: 'prompt', maxTokensParam: 'max_tokens' });
  t.match(parseResponsesRequest({ model: 'm', input: 'x', max_output_tokens: 9 }), { promptParam: 'input', maxTokensParam: 'max_output_tokens', options: { maxTokens: 9 } });
  const tools = [{ type: 'function', function: { name: 'f' } }];
  t.equal(parseChatRequest(chat({ tools, parallel_tool_calls: false })).options.parallelToolCalls, false);
  t.equal(parseChatRequest(chat({ tools })).options.parallelToolCalls, undefined, 'default: parallel');
  t.equal(parseResponsesRequest({ model: 'm', input: 'x', tools: [{ type: 'function', name: 'f' }], parallel_tool_calls: false }).options.parallelToolCalls, false);
  rejects(t, () => parseChatRequest(chat({ tools, parallel_tool_calls: 'no' })), 'parallel_tool_calls');
});
