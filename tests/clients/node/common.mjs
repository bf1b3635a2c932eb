// Shared by the Node client tests: where Sluice is, the models, and a network guard.
//
// The gateway URL (no /v1), the key and the public model names come from the environment;
// tests/clients/test_node_clients.py sets them for a gateway in front of the mock providers:
//   SLUICE_URL, SLUICE_KEY, SLUICE_MODEL_OPENAI (OpenAI-type deployment),
//   SLUICE_MODEL_ANTHROPIC (Anthropic-type deployment), SLUICE_MODEL_EMBED.
import assert from 'node:assert/strict';
import { after } from 'node:test';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/clients/test_node_clients.py`);
  return value;
}

export const SLUICE_URL = required('SLUICE_URL').replace(/\/+$/, '');
export const SLUICE_KEY = required('SLUICE_KEY');
export const MODEL_OPENAI = required('SLUICE_MODEL_OPENAI');
export const MODEL_ANTHROPIC = required('SLUICE_MODEL_ANTHROPIC');
export const MODEL_EMBED = required('SLUICE_MODEL_EMBED');

// Every chat model, with the wire format of the deployment behind it: an OpenAI-format client
// is passed through on 'openai' and translated on 'anthropic', and the other way round.
export const CHAT_MODELS = [
  { name: MODEL_OPENAI, deployment: 'openai' },
  { name: MODEL_ANTHROPIC, deployment: 'anthropic' },
];

// The SDKs may only talk to Sluice: anything else (telemetry, a hosted gateway, a model
// catalogue) is refused here and fails the file, even if the SDK swallowed the error.
const allowedOrigin = new URL(SLUICE_URL).origin;
const blocked = [];
const realFetch = globalThis.fetch;
globalThis.fetch = function guardedFetch(input, init) {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  if (new URL(url).origin !== allowedOrigin) {
    blocked.push(url);
    return Promise.reject(new Error(`blocked a request that was not for Sluice: ${url}`));
  }
  return realFetch(input, init);
};
after(() => assert.deepEqual(blocked, [], 'a client tried to reach something other than Sluice'));

// The mock providers answer "Mock answer to: <the prompt>" padded with filler words, so a
// prompt of distinct words shows up in the answer whichever deployment served it.
export function assertEchoes(text, prompt) {
  assert.equal(typeof text, 'string');
  assert.ok(text.includes(prompt), `expected the answer to echo ${JSON.stringify(prompt)}: ${JSON.stringify(text)}`);
}

export function assertPositiveInt(value, what) {
  assert.ok(Number.isInteger(value) && value > 0, `${what} should be a positive integer, got ${value}`);
}

// One tool and one structured-output schema, used by every client.
export const WEATHER_TOOL_NAME = 'get_weather';
export const WEATHER_PARAMETERS = {
  type: 'object',
  properties: { city: { type: 'string', description: 'City name' } },
  required: ['city'],
  additionalProperties: false,
};
export const TOOL_RESULT = '{"city":"Paris","temperature_c":21,"sky":"clear"}';

// A JSON schema and a validator for it (what the SDKs without zod are checked against).
export const FORECAST_SCHEMA = {
  type: 'object',
  properties: {
    city: { type: 'string' },
    days: { type: 'integer' },
    rain: { type: 'boolean' },
    temperatures: { type: 'array', items: { type: 'number' } },
    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
  },
  required: ['city', 'days', 'rain', 'temperatures', 'unit'],
  additionalProperties: false,
};

export function assertForecast(value) {
  assert.equal(typeof value, 'object');
  assert.notEqual(value, null);
  assert.deepEqual(Object.keys(value).sort(), ['city', 'days', 'rain', 'temperatures', 'unit']);
  assert.equal(typeof value.city, 'string');
  assert.ok(Number.isInteger(value.days), `days should be an integer: ${value.days}`);
  assert.equal(typeof value.rain, 'boolean');
  assert.ok(Array.isArray(value.temperatures) && value.temperatures.every((t) => typeof t === 'number'));
  assert.ok(['celsius', 'fahrenheit'].includes(value.unit), `unit: ${value.unit}`);
}

// An embedding from the mock: a unit vector of `dim` finite numbers.
export function assertUnitVector(vector, dim) {
  assert.ok(Array.isArray(vector) || ArrayBuffer.isView(vector), 'embedding should be an array of numbers');
  assert.equal(vector.length, dim);
  let norm = 0;
  for (const v of vector) {
    assert.ok(Number.isFinite(v), `embedding value ${v}`);
    norm += v * v;
  }
  assert.ok(Math.abs(Math.sqrt(norm) - 1) < 1e-3, `embedding norm ${Math.sqrt(norm)} should be 1`);
}
