// The `openai` npm package pointed at Sluice by baseURL, on an OpenAI-type deployment
// (passed through) and an Anthropic-type one (translated), plus embeddings and Responses.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import OpenAI from 'openai';
import { zodResponseFormat, zodTextFormat } from 'openai/helpers/zod';
import { z } from 'zod';

import {
  CHAT_MODELS,
  FORECAST_SCHEMA,
  MODEL_ANTHROPIC,
  MODEL_EMBED,
  MODEL_OPENAI,
  SLUICE_KEY,
  SLUICE_URL,
  TOOL_RESULT,
  WEATHER_PARAMETERS,
  WEATHER_TOOL_NAME,
  assertEchoes,
  assertForecast,
  assertPositiveInt,
  assertUnitVector,
} from './common.mjs';

const client = new OpenAI({ baseURL: `${SLUICE_URL}/v1`, apiKey: SLUICE_KEY, maxRetries: 0, timeout: 15_000 });

const WEATHER_TOOL = {
  type: 'function',
  function: { name: WEATHER_TOOL_NAME, description: 'Current weather for a city', parameters: WEATHER_PARAMETERS },
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
  assertPositiveInt(usage.prompt_tokens, 'usage.prompt_tokens');
  assertPositiveInt(usage.completion_tokens, 'usage.completion_tokens');
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
}

for (const { name: model, deployment } of CHAT_MODELS) {
  describe(`openai chat.completions on ${model} (${deployment} deployment)`, () => {
    it('answers text with finish_reason stop and usage', async () => {
      const { data: completion, response } = await client.chat.completions
        .create({ model, messages: [{ role: 'user', content: 'violet harbour lanterns' }] })
        .withResponse();
      assert.equal(completion.object, 'chat.completion');
      assert.equal(completion.choices.length, 1);
      const [choice] = completion.choices;
      assert.equal(choice.message.role, 'assistant');
      assertEchoes(choice.message.content, 'violet harbour lanterns');
      assert.equal(choice.finish_reason, 'stop');
      assertUsage(completion.usage);
      assert.ok(response.headers.get('x-sluice-request-id'), 'x-sluice-request-id header');
      assert.ok(response.headers.get('x-sluice-deployment'), 'x-sluice-deployment header');
    });

    it('reports finish_reason length when max_tokens cuts the answer', async () => {
      const completion = await client.chat.completions.create({
        model, max_tokens: 3, messages: [{ role: 'user', content: 'a long story please' }],
      });
      assert.equal(completion.choices[0].finish_reason, 'length');
      assert.ok(completion.choices[0].message.content.length > 0);
    });

    it('streams text deltas, a finish_reason and a usage chunk', async () => {
      const stream = await client.chat.completions.create({
        model, stream: true, stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'copper meadow echoes' }],
      });
      const deltas = [];
      let finishReason = null;
      let usage = null;
      for await (const chunk of stream) {
        assert.equal(chunk.object, 'chat.completion.chunk');
        for (const choice of chunk.choices) {
          if (choice.delta?.content) deltas.push(choice.delta.content);
          if (choice.finish_reason) finishReason = choice.finish_reason;
        }
        if (chunk.usage) usage = chunk.usage;
      }
      assert.ok(deltas.length > 1, `expected several content deltas, got ${deltas.length}`);
      assertEchoes(deltas.join(''), 'copper meadow echoes');
      assert.equal(finishReason, 'stop');
      assertUsage(usage);
    });

    it('streams through the SDK helper to a final completion', async () => {
      const stream = client.chat.completions.stream({
        model, stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'quiet granite orchard' }],
      });
      const deltas = [];
      stream.on('content', (delta) => deltas.push(delta));
      const final = await stream.finalChatCompletion();
      assert.ok(deltas.length > 1);
      assertEchoes(final.choices[0].message.content, 'quiet granite orchard');
      assert.equal(final.choices[0].message.content, deltas.join(''));
      assert.equal(final.choices[0].finish_reason, 'stop');
      assertUsage(final.usage);
    });

    it('calls a tool with JSON arguments', async () => {
      const completion = await client.chat.completions.create({
        model, tools: [WEATHER_TOOL], messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
      });
      const [choice] = completion.choices;
      assert.equal(choice.finish_reason, 'tool_calls');
      assert.equal(choice.message.tool_calls?.length, 1);
      const [call] = choice.message.tool_calls;
      assert.equal(call.type, 'function');
      assert.ok(call.id, 'tool call id');
      assert.equal(call.function.name, WEATHER_TOOL_NAME);
      const args = JSON.parse(call.function.arguments);
      assert.deepEqual(Object.keys(args), ['city']);
      assert.equal(typeof args.city, 'string');
      assertUsage(completion.usage);
    });

    it('streams a tool call whose argument deltas join to JSON', async () => {
      const stream = await client.chat.completions.create({
        model, stream: true, stream_options: { include_usage: true }, tools: [WEATHER_TOOL],
        tool_choice: { type: 'function', function: { name: WEATHER_TOOL_NAME } },
        messages: [{ role: 'user', content: 'Weather in Paris, please.' }],
      });
      const calls = new Map();
      let finishReason = null;
      let usage = null;
      for await (const chunk of stream) {
        for (const choice of chunk.choices) {
          for (const delta of choice.delta?.tool_calls ?? []) {
            const call = calls.get(delta.index) ?? { id: '', name: '', arguments: '' };
            call.id += delta.id ?? '';
            call.name += delta.function?.name ?? '';
            call.arguments += delta.function?.arguments ?? '';
            calls.set(delta.index, call);
          }
          if (choice.finish_reason) finishReason = choice.finish_reason;
        }
        if (chunk.usage) usage = chunk.usage;
      }
      assert.equal(calls.size, 1);
      const call = calls.get(0);
      assert.ok(call.id);
      assert.equal(call.name, WEATHER_TOOL_NAME);
      assert.equal(typeof JSON.parse(call.arguments).city, 'string');
      assert.equal(finishReason, 'tool_calls');
      assertUsage(usage);
    });

    it('answers text after the tool result is sent back', async () => {
      const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
      const first = await client.chat.completions.create({ model, tools: [WEATHER_TOOL], messages });
      const assistant = first.choices[0].message;
      assert.equal(assistant.tool_calls?.length, 1);
      const [call] = assistant.tool_calls;
      messages.push(
        { role: 'assistant', content: assistant.content, tool_calls: assistant.tool_calls },
        { role: 'tool', tool_call_id: call.id, content: TOOL_RESULT },
      );
      const second = await client.chat.completions.create({ model, tools: [WEATHER_TOOL], messages });
      const [choice] = second.choices;
      assert.equal(choice.finish_reason, 'stop');
      assert.ok(!choice.message.tool_calls?.length, 'the model should answer, not call the tool again');
      assert.ok(choice.message.content?.trim().length > 0, 'a text answer');
      assertUsage(second.usage);
    });

    it('returns structured output matching a json_schema response_format', async () => {
      const completion = await client.chat.completions.parse({
        model, response_format: zodResponseFormat(Forecast, 'forecast'),
        messages: [{ role: 'user', content: 'Forecast for Paris for the next three days.' }],
      });
      const [choice] = completion.choices;
      assert.equal(choice.finish_reason, 'stop');
      assert.ok(choice.message.parsed, `no parsed output; content was ${JSON.stringify(choice.message.content)}`);
      assertForecast(choice.message.parsed);
      assert.deepEqual(Forecast.parse(JSON.parse(choice.message.content)), choice.message.parsed);
    });

    it('returns structured output for a plain json_schema response_format', async () => {
      const completion = await client.chat.completions.create({
        model,
        response_format: {
          type: 'json_schema', json_schema: { name: 'forecast', strict: true, schema: FORECAST_SCHEMA },
        },
        messages: [{ role: 'user', content: 'Forecast for Lyon.' }],
      });
      let parsed;
      const { content } = completion.choices[0].message;
      assert.doesNotThrow(() => { parsed = JSON.parse(content); }, `content is not JSON: ${JSON.stringify(content)}`);
      assertForecast(parsed);
    });

    it('refuses an unknown key with AuthenticationError', async () => {
      const stranger = new OpenAI({ baseURL: `${SLUICE_URL}/v1`, apiKey: 'not-a-sluice-key', maxRetries: 0 });
      await assert.rejects(
        stranger.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] }),
        (err) => err instanceof OpenAI.AuthenticationError && err.status === 401,
      );
    });
  });
}

describe('openai models and errors', () => {
  it('lists the public models', async () => {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    for (const { name } of CHAT_MODELS) assert.ok(ids.includes(name), `${name} missing from ${ids}`);
    assert.ok(ids.includes(MODEL_EMBED));
  });

  it('raises NotFoundError for an unknown model', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
      (err) => err instanceof OpenAI.NotFoundError && err.status === 404 && typeof err.message === 'string',
    );
  });
});

describe(`openai embeddings on ${MODEL_EMBED}`, () => {
  it('decodes the default base64 embeddings into unit vectors', async () => {
    const inputs = ['the first sentence', 'a second, different one', 'the first sentence'];
    const response = await client.embeddings.create({ model: MODEL_EMBED, input: inputs });
    assert.equal(response.object, 'list');
    assert.deepEqual(response.data.map((d) => d.index), [0, 1, 2]);
    const vectors = response.data.map((d) => d.embedding);
    const dim = vectors[0].length;
    assert.ok(dim > 0);
    for (const v of vectors) assertUnitVector(v, dim);
    assert.deepEqual(vectors[0], vectors[2], 'the same input gives the same vector');
    assert.notDeepEqual(vectors[0], vectors[1]);
    assertPositiveInt(response.usage.prompt_tokens, 'usage.prompt_tokens');
  });

  it('returns the same vector as floats when asked for encoding_format float', async () => {
    const asBase64 = await client.embeddings.create({ model: MODEL_EMBED, input: 'stable vector please' });
    const asFloat = await client.embeddings.create({
      model: MODEL_EMBED, input: 'stable vector please', encoding_format: 'float',
    });
    const a = asBase64.data[0].embedding;
    const b = asFloat.data[0].embedding;
    assert.equal(a.length, b.length);
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-6, `component ${i}: ${v} vs ${b[i]}`));
  });
});

// The Responses API is passed through to OpenAI-type deployments only.
describe(`openai responses on ${MODEL_OPENAI} (openai deployment)`, () => {
  it('answers text with usage', async () => {
    const response = await client.responses.create({ model: MODEL_OPENAI, input: 'amber tide signals' });
    assert.equal(response.status, 'completed');
    assertEchoes(response.output_text, 'amber tide signals');
    assertPositiveInt(response.usage.input_tokens, 'usage.input_tokens');
    assertPositiveInt(response.usage.output_tokens, 'usage.output_tokens');
  });

  it('streams text deltas to a completed response', async () => {
    const stream = client.responses.stream({ model: MODEL_OPENAI, input: 'silver fern valley' });
    const deltas = [];
    stream.on('response.output_text.delta', (event) => deltas.push(event.delta));
    const final = await stream.finalResponse();
    assert.ok(deltas.length > 1);
    assert.equal(final.status, 'completed');
    assertEchoes(final.output_text, 'silver fern valley');
    assert.equal(final.output_text, deltas.join(''));
    assertPositiveInt(final.usage.output_tokens, 'usage.output_tokens');
  });

  it('returns structured output for text.format json_schema', async () => {
    const response = await client.responses.parse({
      model: MODEL_OPENAI, input: 'Forecast for Nice.', text: { format: zodTextFormat(Forecast, 'forecast') },
    });
    assert.ok(response.output_parsed, `no parsed output; text was ${JSON.stringify(response.output_text)}`);
    assertForecast(response.output_parsed);
  });
});

describe(`openai responses on ${MODEL_ANTHROPIC} (anthropic deployment)`, () => {
  it('is refused with a 400 that says no deployment serves the Responses API', async () => {
    await assert.rejects(
      client.responses.create({ model: MODEL_ANTHROPIC, input: 'hello' }),
      (err) => err instanceof OpenAI.BadRequestError && /responses/i.test(err.message),
    );
  });
});
