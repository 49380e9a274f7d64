#!/usr/bin/env python3
"""What the demo's printed requests are built from: the policy as written (scripts/demo.sh).

    python3 scripts/demo_requests.py POLICY      # shell assignments for scripts/demo.sh

A FHIR API (`fhir` section): its base path, the patient claim, the token scheme. A plain REST
API (no `fhir`): one request the policy allows and the token that passes it, built from the
first enforced protected route (`routes[]`, first match wins): a path under its prefix (each
`{name}` template segment filled in), a method it lists, every scope it needs (`all_of` plus
one of `any_of`), every claim condition and `authorization_details` entry it tests, and each
binding (a path parameter or header equal to a claim or `authorization_details` field), all
satisfied; the same request with a token lacking its scopes (when it needs any) is the
"missing scope" denial. Also the first public route, for a 200 without a token.
"""
import json
import shlex
import sys

SAMPLE_PARAM = "974600951"  # a sample organisation number for `{orgnr}`-like template segments


def _set(obj, dotted, value):
    """Sets `value` at the dotted field path inside `obj` (dicts made as needed)."""
    *head, last = dotted.split(".")
    for k in head:
        obj = obj.setdefault(k, {})
    obj[last] = value


def _satisfying(cond):
    """A value that passes one condition (crate::authz::CondDoc)."""
    if "equals" in cond:
        return cond["equals"]
    if cond.get("one_of"):
        return cond["one_of"][0]
    if "prefix" in cond:
        return cond["prefix"] + "sample"
    if "contains" in cond:
        return [cond["contains"]]
    if "gte" in cond or "lte" in cond:
        n = cond["gte"] if "gte" in cond else cond["lte"]
        return int(n) if float(n).is_integer() else n
    if cond.get("present") is False:
        return None
    return "sample"


def _route_path(prefix):
    return "/" + "/".join(SAMPLE_PARAM if s.startswith("{") else s for s in prefix.strip("/").split("/") if s)


def _prefix(route):
    return route.get("path_prefix") or route.get("path") or "/"


def rest_plan(policy):
    """The allowed request and its token for a REST policy (see the module doc)."""
    mode = policy.get("mode", "enforce")
    routes = policy.get("routes") or []
    public = next((r for r in routes if r.get("require") == "none"), None)
    protected = [r for r in routes if r.get("require") == "token" and r.get("mode", mode) == "enforce"]
    route = next((r for r in protected if not r.get("methods") or "GET" in r["methods"]), None)
    route = route or (protected[0] if protected else {"path_prefix": "/"})
    methods = route.get("methods") or ["GET"]
    method = "GET" if "GET" in methods else methods[0]
    path = _route_path(_prefix(route))
    authz = route.get("authz") or {}
    scopes = list((authz.get("scopes") or {}).get("all_of") or [])
    scopes += (authz.get("scopes") or {}).get("any_of", [])[:1]
    claims, details, headers = {}, {}, []
    for c in authz.get("claims") or []:
        if c.get("present") is not False:
            claims[c["claim"]] = _satisfying(c)
    for d in authz.get("authorization_details") or []:
        entry = details.setdefault(d["type"], {"type": d["type"]})
        for f in d.get("fields") or []:
            if f.get("present") is not False:
                _set(entry, f["field"], _satisfying(f))
    for b in authz.get("bind") or []:
        value = SAMPLE_PARAM
        if b.get("header"):
            headers.append(f"{b['header']}: {value}")
        token_value = f"NO:ORGNR:{value}" if b.get("match") == "colon_suffix" else value
        if b.get("claim"):
            claims[b["claim"]] = token_value
        elif b.get("authorization_details"):
            ref = b["authorization_details"]
            _set(details.setdefault(ref["type"], {"type": ref["type"]}), ref["field"], token_value)
    if details:
        claims["authorization_details"] = list(details.values())
    return {
        "RMETHOD": method,
        "RPATH": path,
        "RSCOPE": " ".join(scopes),
        # A token without the route's scopes (only when it needs one): 403 insufficient_scope.
        "RSCOPE_DENIED": "unrelated/scope" if scopes else "",
        # Shell words for guard-issuer token / curl (scripts/demo.sh pastes them as they are).
        "RCLAIMS": " ".join("--claim " + shlex.quote(f"{k}={json.dumps(v, ensure_ascii=False)}") for k, v in claims.items()),
        "RHEADERS": " ".join("-H " + shlex.quote(h) for h in headers),
        "RCLAIMS_TEXT": "  ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in claims.items()),
        "PUBLIC_PATH": _route_path(_prefix(public)) if public else "",
        "PUBLIC_METHOD": ((public or {}).get("methods") or ["GET"])[0],
    }


def plan(policy):
    f = policy.get("fhir") or {}
    base = "/" + (f.get("base_path") or "/").strip("/")
    schemes = (policy.get("token") or {}).get("schemes") or ["DPoP"]
    algs = (policy.get("token") or {}).get("allowed_algs") or ["PS256", "ES256", "EdDSA"]
    # The demo's signing key: ES256 (guard-issuer demo-setup) unless the policy does not allow it
    # (HelseID: RS256 only); then the first allowed alg guard-issuer makes keys for.
    sign = "ES256" if "ES256" in algs else next((a for a in algs if a in ("PS256", "RS256", "EdDSA")), "ES256")
    out = {"SIGN_ALG": sign, "ISS": policy["issuers"][0]["issuer"], "AUD": policy["api"]["audience"], "BASE": base.rstrip("/"),
           "PCLAIM": f.get("patient_claim") or "patient", "SCHEME": "DPoP" if "DPoP" in schemes else "Bearer",
           "REST": "0" if isinstance(policy.get("fhir"), dict) else "1"}
    if out["REST"] == "1":
        out.update(rest_plan(policy))
    return out


def main(argv):
    with open(argv[1], encoding="utf-8") as fh:
        out = plan(json.load(fh))
    print("\n".join(f"{k}={shlex.quote(str(v))}" for k, v in out.items()))


if __name__ == "__main__":
    main(sys.argv)
