#!/usr/bin/env python3
"""Expected token ids for the chat-prompt tests, computed independently of the
TypeScript path: templates rendered by Python's jinja2 configured as Hugging
Face transformers configures it (trim_blocks, lstrip_blocks, loopcontrols,
tojson without HTML escaping, raise_exception, strftime_now), then tokenized by
hand for the test tokenizer: each special token is one id (256 + its index),
every other byte is the id of that byte (a byte-level BPE without merges).

    python3 scripts/gen-chat-fixtures.py > packages/engine/test/fixtures/chat-cases.json
"""
import json, os, sys
from datetime import datetime
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import loopcontrols

HERE = os.path.join(os.path.dirname(__file__), '..', 'packages', 'engine', 'test', 'fixtures', 'templates')

STYLES = {
    'llama2': dict(file='meta-llama-Llama-2-chat.jinja', bos='<s>', eos='</s>', add_bos=True,
                   special=['<s>', '</s>']),
    'llama3': dict(file='meta-llama-Llama-3.3-70B-Instruct.jinja', bos='<|begin_of_text|>', eos='<|eot_id|>', add_bos=True,
                   special=['<|begin_of_text|>', '<|eot_id|>', '<|start_header_id|>', '<|end_header_id|>', '<|eom_id|>', '<|python_tag|>']),
    'mistral': dict(file='mistralai-Mistral-Nemo-Instruct-2407.jinja', bos='<s>', eos='</s>', add_bos=True,
                    special=['<s>', '</s>', '[INST]', '[/INST]', '[AVAILABLE_TOOLS]', '[/AVAILABLE_TOOLS]', '[TOOL_CALLS]', '[TOOL_RESULTS]', '[/TOOL_RESULTS]']),
    'qwen2': dict(file='Qwen-Qwen2-7B-Instruct.jinja', bos=None, eos='<|im_end|>', add_bos=False,
                  special=['<|endoftext|>', '<|im_start|>', '<|im_end|>']),
    'qwen3': dict(file='Qwen-Qwen3-0.6B.jinja', bos=None, eos='<|im_end|>', add_bos=False,
                  special=['<|endoftext|>', '<|im_start|>', '<|im_end|>']),
}

WEATHER = {'type': 'function', 'function': {'name': 'get_weather', 'description': 'Current weather in a city',
           'parameters': {'type': 'object', 'properties': {'city': {'type': 'string'}, 'unit': {'type': 'string', 'enum': ['c', 'f']}},
                          'required': ['city']}}}

# Messages as the templates receive them (after Shoal's normalisation: parts
# joined, developer -> system, null content -> '', tool-call arguments parsed
# to objects).
CASES = [
    dict(name='user only', messages=[{'role': 'user', 'content': 'Hello there!'}]),
    dict(name='system + user', messages=[{'role': 'system', 'content': 'You are a robot.'}, {'role': 'user', 'content': 'Move to dock 3.'}]),
    dict(name='multi-turn', messages=[
        {'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'},
        {'role': 'assistant', 'content': 'Hello! How can I help?'}, {'role': 'user', 'content': 'Say "ok" — ünïcode ✓'}]),
    dict(name='no generation prompt', add_generation_prompt=False, messages=[
        {'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hey.'}]),
    dict(name='tools round trip', styles=['llama3', 'mistral', 'qwen3'], tools=[WEATHER], messages=[
        {'role': 'user', 'content': 'Weather in Oslo?'},
        {'role': 'assistant', 'content': '', 'tool_calls': [{'id': 'a1B2c3D4e', 'type': 'function', 'function': {'name': 'get_weather', 'arguments': {'city': 'Oslo'}}}]},
        {'role': 'tool', 'tool_call_id': 'a1B2c3D4e', 'content': '{"temp": 4}'}]),
    dict(name='tools offered', styles=['llama3', 'mistral', 'qwen3'], tools=[WEATHER], messages=[
        {'role': 'system', 'content': 'You control a robot.'}, {'role': 'user', 'content': 'Weather in Oslo?'}]),
]


def tojson(x, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(msg):
    raise jinja2.exceptions.TemplateError(msg)


def render(tpl, case, st):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters['tojson'] = tojson
    env.globals['raise_exception'] = raise_exception
    env.globals['strftime_now'] = lambda f: datetime.now().strftime(f)
    ctx = dict(messages=case['messages'], add_generation_prompt=case.get('add_generation_prompt', True),
               bos_token=st['bos'] or '', eos_token=st['eos'])
    if 'tools' in case:
        ctx['tools'] = case['tools']
    return env.from_string(tpl).render(**ctx)


def tokenize(text, special):
    ids, i = [], 0
    while i < len(text):
        for k, s in enumerate(special):
            if text.startswith(s, i):
                ids.append(256 + k)
                i += len(s)
                break
        else:
            ids.extend(text[i].encode('utf-8'))
            i += 1
    return ids


out = []
for style, st in STYLES.items():
    tpl = open(os.path.join(HERE, st['file']), encoding='utf-8').read()
    cases = []
    for case in CASES:
        if 'styles' in case and style not in case['styles']:
            continue
        if style in ('llama2', 'mistral') and case['messages'][-1]['role'] == 'assistant' and case.get('add_generation_prompt', True) is False:
            pass
        text = render(tpl, case, st)
        cases.append(dict(name=case['name'], messages=case['messages'], tools=case.get('tools'),
                          add_generation_prompt=case.get('add_generation_prompt', True), text=text, ids=tokenize(text, st['special'])))
    out.append(dict(style=style, template=st['file'], bos=st['bos'], eos=st['eos'], add_bos=st['add_bos'], special=st['special'], cases=cases))
json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
print()
