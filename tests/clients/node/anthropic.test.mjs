// `@anthropic-ai/sdk` pointed at Sluice by baseURL, on an Anthropic-type deployment
// (passed through) and an OpenAI-type one (translated).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';
import { zodOutputFormat } from '@anthropic-ai/sdk/helpers/zod';
import { z } from 'zod';

import {
  CHAT_MODELS,
  FORECAST_SCHEMA,
  SLUICE_KEY,
  SLUICE_URL,
  TOOL_RESULT,
  WEATHER_PARAMETERS,
  WEATHER_TOOL_NAME,
  assertEchoes,
  assertForecast,
  assertPositiveInt,
} from './common.mjs';

const client = new Anthropic({ baseURL: SLUICE_URL, apiKey: SLUICE_KEY, maxRetries: 0, timeout: 15_000 });

const WEATHER_TOOL = {
  name: WEATHER_TOOL_NAME, description: 'Current weather for a city', input_schema: WEATHER_PARAMETERS,
};

const Forecast = z.object({
  city: z.string(),
  days: z.number().int(),
  rain: z.boolean(),
  temperatures: z.array(z.number()),
  unit: z.enum(['celsius', 'fahrenheit']),
});

function assertUsage(usage) {
  assert.ok(usage, 'usage missing');
  assertPositiveInt(usage.input_tokens, 'usage.input_tokens');
  assertPositiveInt(usage.output_tokens, 'usage.output_tokens');
}

function textOf(message) {
  return message.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
}

for (const { name: model, deployment } of CHAT_MODELS) {
  describe(`anthropic messages on ${model} (${deployment} deployment)`, () => {
    it('answers text with stop_reason end_turn and usage', async () => {
      const { data: message, response } = await client.messages
        .create({ model, max_tokens: 256, messages: [{ role: 'user', content: 'violet harbour lanterns' }] })
        .withResponse();
      assert.equal(message.type, 'message');
      assert.equal(message.role, 'assistant');
      assert.ok(message.id, 'message id');
      assert.equal(message.content.length, 1);
      assert.equal(message.content[0].type, 'text');
      assertEchoes(message.content[0].text, 'violet harbour lanterns');
      assert.equal(message.stop_reason, 'end_turn');
      assertUsage(message.usage);
      assert.ok(response.headers.get('x-sluice-request-id'), 'x-sluice-request-id header');
    });

    it('takes a system prompt and content blocks', async () => {
      const message = await client.messages.create({
        model, max_tokens: 256, system: [{ type: 'text', text: 'You are terse.' }],
        messages: [{ role: 'user', content: [{ type: 'text', text: 'northern glass bells' }] }],
      });
      assertEchoes(textOf(message), 'northern glass bells');
      assert.equal(message.stop_reason, 'end_turn');
    });

    it('reports stop_reason max_tokens when max_tokens cuts the answer', async () => {
      const message = await client.messages.create({
        model, max_tokens: 3, messages: [{ role: 'user', content: 'a long story please' }],
      });
      assert.equal(message.stop_reason, 'max_tokens');
      assert.ok(textOf(message).length > 0);
      assertUsage(message.usage);
    });

    it('streams text deltas; finalMessage() has stop_reason and output usage', async () => {
      const stream = client.messages.stream({
        model, max_tokens: 256, messages: [{ role: 'user', content: 'copper meadow echoes' }],
      });
      const deltas = [];
      stream.on('text', (delta) => deltas.push(delta));
      const final = await stream.finalMessage();
      assert.ok(deltas.length > 1, `expected several text deltas, got ${deltas.length}`);
      assertEchoes(deltas.join(''), 'copper meadow echoes');
      assert.equal(textOf(final), deltas.join(''));
      assert.equal(final.stop_reason, 'end_turn');
      assertUsage(final.usage);
    });

    it('streams the raw event sequence with a message_delta', async () => {
      const stream = await client.messages.create({
        model, max_tokens: 256, stream: true, messages: [{ role: 'user', content: 'quiet granite orchard' }],
      });
      const types = [];
      let text = '';
      let messageDelta = null;
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') text += event.delta.text;
        if (event.type === 'message_delta') messageDelta = event;
      }
      assert.equal(types[0], 'message_start');
      assert.equal(types.at(-1), 'message_stop');
      assert.ok(types.includes('content_block_start') && types.includes('content_block_stop'), types.join(','));
      assertEchoes(text, 'quiet granite orchard');
      assert.ok(messageDelta, `no message_delta event in ${types.join(',')}`);
      assert.equal(messageDelta.delta.stop_reason, 'end_turn');
      assertPositiveInt(messageDelta.usage.output_tokens, 'message_delta usage.output_tokens');
    });

    it('calls a tool with a parsed input', async () => {
      const message = await client.messages.create({
        model, max_tokens: 256, tools: [WEATHER_TOOL],
        messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
      });
      assert.equal(message.stop_reason, 'tool_use');
      const uses = message.content.filter((b) => b.type === 'tool_use');
      assert.equal(uses.length, 1);
      assert.ok(uses[0].id, 'tool_use id');
      assert.equal(uses[0].name, WEATHER_TOOL_NAME);
      assert.deepEqual(Object.keys(uses[0].input), ['city']);
      assert.equal(typeof uses[0].input.city, 'string');
      assertUsage(message.usage);
    });

    it('streams a tool call whose input_json deltas parse to the input', async () => {
      const stream = client.messages.stream({
        model, max_tokens: 256, tools: [WEATHER_TOOL], tool_choice: { type: 'tool', name: WEATHER_TOOL_NAME },
        messages: [{ role: 'user', content: 'Weather in Paris, please.' }],
      });
      let partialJson = '';
      stream.on('inputJson', (delta) => { partialJson += delta; });
      const final = await stream.finalMessage();
      assert.equal(final.stop_reason, 'tool_use');
      const use = final.content.find((b) => b.type === 'tool_use');
      assert.ok(use, `no tool_use block in ${JSON.stringify(final.content)}`);
      assert.equal(use.name, WEATHER_TOOL_NAME);
      assert.equal(typeof use.input.city, 'string');
      assert.deepEqual(JSON.parse(partialJson), use.input);
      assertUsage(final.usage);
    });

    it('answers text after the tool_result is sent back', async () => {
      const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
      const first = await client.messages.create({ model, max_tokens: 256, tools: [WEATHER_TOOL], messages });
      const use = first.content.find((b) => b.type === 'tool_use');
      assert.ok(use, 'the first turn calls the tool');
      messages.push(
        { role: 'assistant', content: first.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: TOOL_RESULT }] },
      );
      const second = await client.messages.create({ model, max_tokens: 256, tools: [WEATHER_TOOL], messages });
      assert.equal(second.stop_reason, 'end_turn');
      assert.ok(!second.content.some((b) => b.type === 'tool_use'), 'the model should answer, not call the tool again');
      assert.ok(textOf(second).trim().length > 0, 'a text answer');
      assertUsage(second.usage);
    });

    it('returns structured output for output_config.format (zod, parsed by the SDK)', async () => {
      const message = await client.messages.parse({
        model, max_tokens: 512, output_config: { format: zodOutputFormat(Forecast) },
        messages: [{ role: 'user', content: 'Forecast for Paris for the next three days.' }],
      });
      assert.equal(message.stop_reason, 'end_turn');
      assert.ok(message.parsed_output, `no parsed_output; text was ${JSON.stringify(textOf(message))}`);
      assertForecast(message.parsed_output);
    });

    it('returns structured output for a plain output_config.format json_schema', async () => {
      const message = await client.messages.create({
        model, max_tokens: 512, output_config: { format: { type: 'json_schema', schema: FORECAST_SCHEMA } },
        messages: [{ role: 'user', content: 'Forecast for Lyon.' }],
      });
      const text = textOf(message);
      let parsed;
      assert.doesNotThrow(() => { parsed = JSON.parse(text); }, `text is not JSON: ${JSON.stringify(text)}`);
      assertForecast(parsed);
    });

    it('refuses an unknown key with AuthenticationError', async () => {
      const stranger = new Anthropic({ baseURL: SLUICE_URL, apiKey: 'not-a-sluice-key', maxRetries: 0 });
      await assert.rejects(
        stranger.messages.create({ model, max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
        (err) => err instanceof Anthropic.AuthenticationError && err.status === 401,
      );
    });
  });
}

describe('anthropic models and errors', () => {
  it('lists the public models in the Anthropic shape', async () => {
    const models = [];
    for await (const model of client.models.list()) models.push(model);
    const ids = models.map((m) => m.id);
    for (const { name } of CHAT_MODELS) assert.ok(ids.includes(name), `${name} missing from ${ids}`);
    for (const m of models) assert.equal(m.type, 'model');
  });

  it('raises NotFoundError for an unknown model', async () => {
    await assert.rejects(
      client.messages.create({ model: 'no-such-model', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
      (err) => err instanceof Anthropic.NotFoundError && err.status === 404 && err.error?.type === 'error',
    );
  });
});
