// Vercel's `ai` SDK pointed at Sluice through three providers, each by baseURL:
// @ai-sdk/openai-compatible and @ai-sdk/openai (Chat Completions, and Responses on the
// OpenAI-type deployment) and @ai-sdk/anthropic (Messages), every chat one on both
// deployments: its own format passed through, the other translated.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { embed, embedMany, generateObject, generateText, stepCountIs, streamObject, streamText, tool } from 'ai';
import { z } from 'zod';

import {
  CHAT_MODELS,
  MODEL_EMBED,
  MODEL_OPENAI,
  SLUICE_KEY,
  SLUICE_URL,
  WEATHER_TOOL_NAME,
  assertEchoes,
  assertForecast,
  assertPositiveInt,
  assertUnitVector,
} from './common.mjs';

globalThis.AI_SDK_LOG_WARNINGS = false; // unsupported-setting notes would only clutter the test output

const compatible = createOpenAICompatible({
  name: 'sluice', baseURL: `${SLUICE_URL}/v1`, apiKey: SLUICE_KEY, includeUsage: true, supportsStructuredOutputs: true,
});
const openai = createOpenAI({ baseURL: `${SLUICE_URL}/v1`, apiKey: SLUICE_KEY });
const anthropic = createAnthropic({ baseURL: `${SLUICE_URL}/v1`, apiKey: SLUICE_KEY });

const CALL = { maxRetries: 0 };

const Forecast = z.object({
  city: z.string(),
  days: z.number().int(),
  rain: z.boolean(),
  temperatures: z.array(z.number()),
  unit: z.enum(['celsius', 'fahrenheit']),
});

const weatherInput = z.object({ city: z.string().describe('City name') });
const weatherTool = tool({ description: 'Current weather for a city', inputSchema: weatherInput });
const weatherToolWithExecute = tool({
  description: 'Current weather for a city',
  inputSchema: weatherInput,
  execute: async ({ city }) => ({ city, temperature_c: 21, sky: 'clear' }),
});

function assertUsage(usage, what = 'usage') {
  assert.ok(usage, `${what} missing`);
  assertPositiveInt(usage.inputTokens, `${what}.inputTokens`);
  assertPositiveInt(usage.outputTokens, `${what}.outputTokens`);
}

// streamText reports errors through onError and then resolves its promises with whatever
// it had; collect them so a gateway error fails the test with its own message.
function streamErrors() {
  const errors = [];
  return { errors, onError: ({ error }) => errors.push(error) };
}

const CHAT_PROVIDERS = [
  { label: '@ai-sdk/openai-compatible', model: (name) => compatible.chatModel(name) },
  { label: '@ai-sdk/openai chat', model: (name) => openai.chat(name) },
  { label: '@ai-sdk/anthropic', model: (name) => anthropic(name) },
];

for (const provider of CHAT_PROVIDERS) {
  for (const { name, deployment } of CHAT_MODELS) {
    const model = provider.model(name);
    describe(`${provider.label} on ${name} (${deployment} deployment)`, () => {
      it('generateText answers with finishReason stop and usage', async () => {
        const result = await generateText({ ...CALL, model, prompt: 'violet harbour lanterns' });
        assertEchoes(result.text, 'violet harbour lanterns');
        assert.equal(result.finishReason, 'stop');
        assertUsage(result.usage);
        assert.ok(result.response.headers?.['x-sluice-request-id'], 'x-sluice-request-id header');
      });

      it('generateText reports finishReason length at maxOutputTokens', async () => {
        const result = await generateText({ ...CALL, model, maxOutputTokens: 3, prompt: 'a long story please' });
        assert.equal(result.finishReason, 'length');
        assert.ok(result.text.length > 0);
      });

      it('streamText streams deltas to a finish reason and usage', async () => {
        const { errors, onError } = streamErrors();
        const result = streamText({ ...CALL, model, onError, prompt: 'copper meadow echoes' });
        const deltas = [];
        for await (const delta of result.textStream) deltas.push(delta);
        assert.deepEqual(errors, []);
        assert.ok(deltas.length > 1, `expected several text deltas, got ${deltas.length}`);
        assertEchoes(deltas.join(''), 'copper meadow echoes');
        assert.equal(await result.text, deltas.join(''));
        assert.equal(await result.finishReason, 'stop');
        assertUsage(await result.usage);
      });

      it('generateText returns a tool call with parsed input', async () => {
        const result = await generateText({
          ...CALL, model, tools: { [WEATHER_TOOL_NAME]: weatherTool }, prompt: 'What is the weather in Paris?',
        });
        assert.equal(result.finishReason, 'tool-calls');
        assert.equal(result.toolCalls.length, 1);
        const [call] = result.toolCalls;
        assert.equal(call.toolName, WEATHER_TOOL_NAME);
        assert.ok(call.toolCallId, 'toolCallId');
        assert.ok(!call.invalid, `the SDK rejected the tool input: ${call.error}`);
        assert.equal(typeof call.input.city, 'string');
        assertUsage(result.usage);
      });

      it('streamText streams a tool call whose input deltas parse', async () => {
        const { errors, onError } = streamErrors();
        const result = streamText({
          ...CALL, model, onError, tools: { [WEATHER_TOOL_NAME]: weatherTool },
          toolChoice: { type: 'tool', toolName: WEATHER_TOOL_NAME }, prompt: 'Weather in Paris, please.',
        });
        let inputText = '';
        const calls = [];
        let finish = null;
        for await (const part of result.fullStream) {
          if (part.type === 'tool-input-delta') inputText += part.delta;
          if (part.type === 'tool-call') calls.push(part);
          if (part.type === 'finish') finish = part;
        }
        assert.deepEqual(errors, []);
        assert.equal(calls.length, 1);
        assert.equal(calls[0].toolName, WEATHER_TOOL_NAME);
        assert.equal(typeof calls[0].input.city, 'string');
        assert.deepEqual(JSON.parse(inputText), calls[0].input);
        assert.equal(finish?.finishReason, 'tool-calls');
        assertUsage(finish.totalUsage, 'totalUsage');
      });

      it('runs the tool and answers text from its result (two steps)', async () => {
        const result = await generateText({
          ...CALL, model, tools: { [WEATHER_TOOL_NAME]: weatherToolWithExecute }, stopWhen: stepCountIs(3),
          prompt: 'What is the weather in Paris?',
        });
        const [first, ...rest] = result.steps;
        assert.equal(first.finishReason, 'tool-calls');
        assert.equal(first.toolResults.length, 1);
        assert.equal(first.toolResults[0].output.temperature_c, 21);
        assert.equal(rest.length, 1, `expected one answering step after the tool, got ${result.steps.length} steps`);
        assert.equal(result.finishReason, 'stop');
        assert.equal(result.toolCalls.length, 0, 'the model should answer, not call the tool again');
        assert.ok(result.text.trim().length > 0, 'a text answer');
        assertUsage(result.totalUsage, 'totalUsage');
      });

      it('generateObject returns an object valid for the zod schema', async () => {
        const result = await generateObject({
          ...CALL, model, schema: Forecast, schemaName: 'forecast',
          prompt: 'Forecast for Paris for the next three days.',
        });
        assertForecast(result.object);
        assert.deepEqual(Forecast.parse(result.object), result.object);
        assertUsage(result.usage);
      });

      it('streamObject streams to an object valid for the zod schema', async () => {
        const { errors, onError } = streamErrors();
        const result = streamObject({ ...CALL, model, onError, schema: Forecast, prompt: 'Forecast for Lyon.' });
        let partials = 0;
        for await (const _ of result.partialObjectStream) partials += 1;
        assert.deepEqual(errors, []);
        assert.ok(partials > 0);
        assertForecast(await result.object);
        assertUsage(await result.usage);
      });

      if (provider.label === '@ai-sdk/anthropic') {
        it('generateObject with native output_config.format (structuredOutputMode outputFormat)', async () => {
          const result = await generateObject({
            ...CALL, model, schema: Forecast, prompt: 'Forecast for Nice.',
            providerOptions: { anthropic: { structuredOutputMode: 'outputFormat' } },
          });
          assertForecast(result.object);
          assert.equal(result.finishReason, 'stop');
        });
      }
    });
  }
}

// The Responses API is passed through to OpenAI-type deployments only.
describe(`@ai-sdk/openai responses on ${MODEL_OPENAI} (openai deployment)`, () => {
  const model = openai.responses(MODEL_OPENAI);

  it('generateText answers with usage', async () => {
    const result = await generateText({ ...CALL, model, prompt: 'amber tide signals' });
    assertEchoes(result.text, 'amber tide signals');
    assert.equal(result.finishReason, 'stop');
    assertUsage(result.usage);
  });

  it('streamText streams deltas', async () => {
    const { errors, onError } = streamErrors();
    const result = streamText({ ...CALL, model, onError, prompt: 'silver fern valley' });
    const deltas = [];
    for await (const delta of result.textStream) deltas.push(delta);
    assert.deepEqual(errors, []);
    assert.ok(deltas.length > 1);
    assertEchoes(deltas.join(''), 'silver fern valley');
    assert.equal(await result.finishReason, 'stop');
    assertUsage(await result.usage);
  });

  it('generateText returns a tool call', async () => {
    const result = await generateText({
      ...CALL, model, tools: { [WEATHER_TOOL_NAME]: weatherTool }, prompt: 'What is the weather in Paris?',
    });
    assert.equal(result.finishReason, 'tool-calls');
    assert.equal(result.toolCalls[0]?.toolName, WEATHER_TOOL_NAME);
    assert.equal(typeof result.toolCalls[0].input.city, 'string');
  });

  it('generateObject (text.format json_schema) returns a valid object', async () => {
    const result = await generateObject({ ...CALL, model, schema: Forecast, prompt: 'Forecast for Nice.' });
    assertForecast(result.object);
  });
});

const EMBEDDING_PROVIDERS = [
  { label: '@ai-sdk/openai-compatible', model: compatible.embeddingModel(MODEL_EMBED) },
  { label: '@ai-sdk/openai', model: openai.embedding(MODEL_EMBED) },
];

for (const { label, model } of EMBEDDING_PROVIDERS) {
  describe(`${label} embeddings on ${MODEL_EMBED}`, () => {
    it('embed returns a unit vector with usage', async () => {
      const result = await embed({ ...CALL, model, value: 'the first sentence' });
      assert.ok(result.embedding.length > 0);
      assertUnitVector(result.embedding, result.embedding.length);
      assertPositiveInt(result.usage.tokens, 'usage.tokens');
    });

    it('embedMany returns one vector per value, equal inputs equal vectors', async () => {
      const values = ['the first sentence', 'a second, different one', 'the first sentence'];
      const { embeddings, usage } = await embedMany({ ...CALL, model, values });
      assert.equal(embeddings.length, 3);
      for (const v of embeddings) assertUnitVector(v, embeddings[0].length);
      assert.deepEqual(embeddings[0], embeddings[2]);
      assert.notDeepEqual(embeddings[0], embeddings[1]);
      const single = await embed({ ...CALL, model, value: 'the first sentence' });
      assert.deepEqual(single.embedding, embeddings[0]);
      assertPositiveInt(usage.tokens, 'usage.tokens');
    });
  });
}
