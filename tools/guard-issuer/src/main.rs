//! guard-issuer CLI. See `guard-issuer --help`.

#[cfg(target_arch = "wasm32")]
fn main() {
    eprintln!("guard-issuer is a native tool; it is not built for wasm targets");
    std::process::exit(2);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    match cli::run(std::env::args().skip(1).collect()) {
        Ok(()) => {}
        Err(cli::Failure::Usage(msg)) => {
            eprintln!("guard-issuer: {msg}\nRun `guard-issuer --help` for usage.");
            std::process::exit(2);
        }
        Err(cli::Failure::Runtime(msg)) => {
            eprintln!("guard-issuer: {msg}");
            std::process::exit(1);
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use fapi_guard_issuer::{ath, compact_jws, public_of, random_id, thumbprint, Alg, SigningJwk};
    use serde_json::{json, Map, Value};
    use std::path::Path;
    use std::time::{SystemTime, UNIX_EPOCH};

    const USAGE: &str = "\
guard-issuer: local issuer for tests and the demo (keys, JWKS, RFC 9068 tokens, RFC 9449 DPoP proofs)

USAGE:
  guard-issuer keygen --alg ES256|PS256|EdDSA|RS256 [--bits 2048] [--kid K] [--out key.json]
  guard-issuer jwks key1.json [key2.json ...] [--out jwks.json]
  guard-issuer token --key key.json --iss I --aud A [--aud A2 ...] --sub S --client-id C --scope \"...\"
        [--jkt THUMB | --dpop-key dpopkey.json] [--x5t-s256 T] [--ttl 300] [--typ at+jwt]
        [--iat-offset N] [--nbf-offset N] [--claim name=json-or-string ...] [--omit CLAIM ...]
        [--header name=json ...] [--out FILE]
  guard-issuer dpop --key dpopkey.json --htm GET --htu URL [--token TOKEN] [--nonce N]
        [--iat-offset N] [--jti J] [--typ dpop+jwt] [--claim name=json-or-string ...]
        [--omit CLAIM ...] [--header name=json ...] [--out FILE]
  guard-issuer thumbprint key.json
  guard-issuer demo-setup --dir DIR

Keys are private JWK files. `--claim`/`--header` values are parsed as JSON, else taken as a string;
they are applied after the defaults. A `--header` value of null removes that header member.
`--omit` removes a claim. Offsets are seconds relative to now; a negative --ttl makes an expired token.
demo-setup writes DIR/signing-key.json (ES256), DIR/jwks.json, DIR/dpop-key.json; keeps existing keys.
Exit codes: 0 ok, 1 runtime error, 2 bad arguments.
";

    pub enum Failure {
        Usage(String),
        Runtime(String),
    }
    type CliRes<T> = Result<T, Failure>;

    fn rt(msg: String) -> Failure {
        Failure::Runtime(msg)
    }
    fn usage(msg: impl Into<String>) -> Failure {
        Failure::Usage(msg.into())
    }

    /// Parsed `--flag value` pairs (in order, repeatable) and positional arguments.
    struct Args {
        flags: Vec<(String, String)>,
        positional: Vec<String>,
    }

    impl Args {
        fn parse(argv: &[String], allowed: &[&str]) -> CliRes<Args> {
            let mut flags = Vec::new();
            let mut positional = Vec::new();
            let mut it = argv.iter();
            while let Some(a) = it.next() {
                if let Some(name) = a.strip_prefix("--") {
                    let (name, inline) = match name.split_once('=') {
                        Some((n, v)) => (n, Some(v.to_string())),
                        None => (name, None),
                    };
                    // Spec suffix: `#` integer value, `=` name=value pair (checked before any file I/O).
                    let spec = allowed
                        .iter()
                        .find(|s| s.trim_end_matches(['#', '=']) == name)
                        .ok_or_else(|| usage(format!("unknown argument --{name}")))?;
                    let value = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .cloned()
                            .ok_or_else(|| usage(format!("argument --{name} needs a value")))?,
                    };
                    if spec.ends_with('#') && value.parse::<i64>().is_err() {
                        return Err(usage(format!("argument --{name}: not an integer: {value}")));
                    }
                    if spec.ends_with('=') {
                        name_value(name, &value)?;
                    }
                    flags.push((name.to_string(), value));
                } else {
                    positional.push(a.clone());
                }
            }
            Ok(Args { flags, positional })
        }
        fn all(&self, name: &str) -> Vec<&str> {
            self.flags
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        }
        fn opt(&self, name: &str) -> CliRes<Option<&str>> {
            match self.all(name).as_slice() {
                [] => Ok(None),
                [v] => Ok(Some(v)),
                _ => Err(usage(format!("argument --{name} given more than once"))),
            }
        }
        fn req(&self, name: &str) -> CliRes<&str> {
            self.opt(name)?
                .ok_or_else(|| usage(format!("missing required argument --{name}")))
        }
        fn int(&self, name: &str) -> CliRes<Option<i64>> {
            let v = self.opt(name)?;
            v.map(|v| {
                v.parse()
                    .map_err(|_| usage(format!("argument --{name}: not an integer: {v}")))
            })
            .transpose()
        }
        fn no_positional(&self) -> CliRes<()> {
            match self.positional.first() {
                Some(p) => Err(usage(format!("unexpected argument {p}"))),
                None => Ok(()),
            }
        }
    }

    /// `name=value` where value is JSON if it parses, else a plain string.
    fn name_value(flag: &str, s: &str) -> CliRes<(String, Value)> {
        let (name, v) = s
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| usage(format!("argument --{flag}: expected name=value, got {s}")))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        Ok((name.to_string(), value))
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .unwrap_or(0)
    }

    fn read_json(path: &str) -> CliRes<Value> {
        let text =
            std::fs::read_to_string(path).map_err(|e| rt(format!("cannot read {path}: {e}")))?;
        serde_json::from_str(&text).map_err(|e| rt(format!("{path} is not JSON: {e}")))
    }

    fn load_key(path: &str) -> CliRes<SigningJwk> {
        SigningJwk::from_json(&read_json(path)?).map_err(|e| rt(format!("{path}: {e}")))
    }

    fn write_out(out: Option<&str>, text: &str) -> CliRes<()> {
        match out {
            Some(path) => std::fs::write(path, format!("{text}\n"))
                .map_err(|e| rt(format!("cannot write {path}: {e}"))),
            None => {
                println!("{text}");
                Ok(())
            }
        }
    }

    fn pretty(v: &Value) -> CliRes<String> {
        serde_json::to_string_pretty(v).map_err(|e| rt(e.to_string()))
    }

    pub fn run(argv: Vec<String>) -> CliRes<()> {
        if argv.is_empty()
            || argv
                .iter()
                .any(|a| a == "--help" || a == "-h" || a == "help")
        {
            print!("{USAGE}");
            return Ok(());
        }
        let Some((cmd, rest)) = argv.split_first() else {
            print!("{USAGE}");
            return Ok(());
        };
        match cmd.as_str() {
            "keygen" => keygen(&Args::parse(rest, &["alg", "bits#", "kid", "out"])?),
            "jwks" => jwks(&Args::parse(rest, &["out"])?),
            "token" => token(&Args::parse(
                rest,
                &[
                    "key",
                    "iss",
                    "aud",
                    "sub",
                    "client-id",
                    "scope",
                    "jkt",
                    "dpop-key",
                    "x5t-s256",
                    "ttl#",
                    "claim=",
                    "typ",
                    "iat-offset#",
                    "nbf-offset#",
                    "omit",
                    "header=",
                    "out",
                ],
            )?),
            "dpop" => dpop(&Args::parse(
                rest,
                &[
                    "key",
                    "htm",
                    "htu",
                    "token",
                    "nonce",
                    "iat-offset#",
                    "jti",
                    "typ",
                    "header=",
                    "claim=",
                    "omit",
                    "out",
                ],
            )?),
            "thumbprint" => {
                let a = Args::parse(rest, &[])?;
                let [path] = a.positional.as_slice() else {
                    return Err(usage("thumbprint takes exactly one key file"));
                };
                let tp = thumbprint(&read_json(path)?).map_err(|e| rt(format!("{path}: {e}")))?;
                write_out(None, &tp)
            }
            "demo-setup" => demo_setup(&Args::parse(rest, &["dir"])?),
            other => Err(usage(format!("unknown subcommand {other}"))),
        }
    }

    fn keygen(a: &Args) -> CliRes<()> {
        a.no_positional()?;
        let alg_s = a.req("alg")?;
        let alg = Alg::parse(alg_s).ok_or_else(|| {
            usage(format!(
                "argument --alg: unsupported {alg_s} (ES256|PS256|EdDSA|RS256)"
            ))
        })?;
        let bits = match (a.int("bits")?, alg) {
            (None, _) => 2048,
            (Some(b), Alg::Ps256 | Alg::Rs256) if (1024..=8192).contains(&b) => b as usize,
            (Some(_), Alg::Ps256 | Alg::Rs256) => {
                return Err(usage("argument --bits: must be 1024..8192"))
            }
            (Some(_), _) => return Err(usage("argument --bits: only for RSA algs")),
        };
        let key = SigningJwk::generate(alg, bits, a.opt("kid")?.map(str::to_owned)).map_err(rt)?;
        write_out(a.opt("out")?, &pretty(&key.private_jwk())?)
    }

    fn jwks_of(paths: &[String]) -> CliRes<Value> {
        let keys = paths
            .iter()
            .map(|p| public_of(&read_json(p)?).map_err(|e| rt(format!("{p}: {e}"))))
            .collect::<CliRes<Vec<_>>>()?;
        Ok(json!({ "keys": keys }))
    }

    fn jwks(a: &Args) -> CliRes<()> {
        if a.positional.is_empty() {
            return Err(usage("jwks needs at least one key file"));
        }
        write_out(a.opt("out")?, &pretty(&jwks_of(&a.positional)?)?)
    }

    /// Applies --header, --claim and --omit overrides after the defaults.
    fn apply_overrides(
        a: &Args,
        header: &mut Map<String, Value>,
        claims: &mut Map<String, Value>,
    ) -> CliRes<()> {
        for h in a.all("header") {
            match name_value("header", h)? {
                (name, Value::Null) => header.remove(&name),
                (name, v) => header.insert(name, v),
            };
        }
        for c in a.all("claim") {
            let (name, v) = name_value("claim", c)?;
            claims.insert(name, v);
        }
        for o in a.all("omit") {
            claims.remove(o);
        }
        Ok(())
    }

    fn token(a: &Args) -> CliRes<()> {
        a.no_positional()?;
        for name in ["key", "iss", "sub", "client-id", "scope"] {
            a.req(name)?; // all usage errors (exit 2) before any file is read
        }
        if a.all("aud").is_empty() {
            return Err(usage("missing required argument --aud"));
        }
        if a.opt("jkt")?.is_some() && a.opt("dpop-key")?.is_some() {
            return Err(usage("argument --jkt: use either --jkt or --dpop-key"));
        }
        let key = load_key(a.req("key")?)?;
        let t = now();
        // RFC 9068 §2.1: typ at+jwt; §2.2: iss, exp, aud, sub, client_id, iat, jti (+ scope §2.2.3).
        let mut header = Map::new();
        header.insert("typ".into(), json!(a.opt("typ")?.unwrap_or("at+jwt")));
        header.insert("alg".into(), json!(key.alg.name()));
        if let Some(kid) = &key.kid {
            header.insert("kid".into(), json!(kid));
        }
        let aud = match a.all("aud").as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        let iat = t + a.int("iat-offset")?.unwrap_or(0);
        let mut c = Map::new();
        c.insert("iss".into(), json!(a.req("iss")?));
        c.insert("exp".into(), json!(t + a.int("ttl")?.unwrap_or(300)));
        c.insert("aud".into(), aud);
        c.insert("sub".into(), json!(a.req("sub")?));
        c.insert("client_id".into(), json!(a.req("client-id")?));
        c.insert("iat".into(), json!(iat));
        c.insert("jti".into(), json!(random_id().map_err(rt)?));
        c.insert("scope".into(), json!(a.req("scope")?));
        if let Some(off) = a.int("nbf-offset")? {
            c.insert("nbf".into(), json!(t + off));
        }
        // RFC 9449 §6.1 cnf.jkt; RFC 8705 §3.1 cnf.x5t#S256.
        let mut cnf = Map::new();
        match (a.opt("jkt")?, a.opt("dpop-key")?) {
            (Some(j), _) => {
                cnf.insert("jkt".into(), json!(j));
            }
            (None, Some(p)) => {
                let tp = thumbprint(&read_json(p)?).map_err(|e| rt(format!("{p}: {e}")))?;
                cnf.insert("jkt".into(), json!(tp));
            }
            (None, None) => {}
        }
        if let Some(x5t) = a.opt("x5t-s256")? {
            cnf.insert("x5t#S256".into(), json!(x5t));
        }
        if !cnf.is_empty() {
            c.insert("cnf".into(), Value::Object(cnf));
        }
        apply_overrides(a, &mut header, &mut c)?;
        write_out(a.opt("out")?, &compact_jws(&header, &c, &key).map_err(rt)?)
    }

    fn dpop(a: &Args) -> CliRes<()> {
        a.no_positional()?;
        a.req("htm")?;
        a.req("htu")?;
        let key = load_key(a.req("key")?)?;
        // RFC 9449 §4.2: header typ dpop+jwt, alg, jwk (public key only).
        let mut header = Map::new();
        header.insert("typ".into(), json!(a.opt("typ")?.unwrap_or("dpop+jwt")));
        header.insert("alg".into(), json!(key.alg.name()));
        header.insert("jwk".into(), key.public_members());
        let mut c = Map::new();
        let jti = match a.opt("jti")? {
            Some(j) => j.to_string(),
            None => random_id().map_err(rt)?,
        };
        c.insert("jti".into(), json!(jti));
        c.insert("htm".into(), json!(a.req("htm")?));
        c.insert("htu".into(), json!(a.req("htu")?));
        c.insert(
            "iat".into(),
            json!(now() + a.int("iat-offset")?.unwrap_or(0)),
        );
        if let Some(tok) = a.opt("token")? {
            c.insert("ath".into(), json!(ath(tok)));
        }
        if let Some(n) = a.opt("nonce")? {
            c.insert("nonce".into(), json!(n));
        }
        apply_overrides(a, &mut header, &mut c)?;
        write_out(a.opt("out")?, &compact_jws(&header, &c, &key).map_err(rt)?)
    }

    fn demo_setup(a: &Args) -> CliRes<()> {
        a.no_positional()?;
        let dir = Path::new(a.req("dir")?);
        std::fs::create_dir_all(dir)
            .map_err(|e| rt(format!("cannot create {}: {e}", dir.display())))?;
        let mut paths = Vec::new();
        for (file, kid) in [
            ("signing-key.json", "demo-signing-key"),
            ("dpop-key.json", "demo-dpop-key"),
        ] {
            let path = dir.join(file);
            let p = path.to_string_lossy().to_string();
            if path.exists() {
                load_key(&p)?; // keep it, but fail loudly if it is not a usable key
            } else {
                let key = SigningJwk::generate(Alg::Es256, 0, Some(kid.into())).map_err(rt)?;
                write_out(Some(&p), &pretty(&key.private_jwk())?)?;
            }
            paths.push(p);
        }
        let jwks_path = dir.join("jwks.json").to_string_lossy().to_string();
        let [signing, dpop] = paths.as_slice() else {
            return Err(rt("demo: expected a signing key and a DPoP key".to_string()));
        };
        write_out(
            Some(&jwks_path),
            &pretty(&jwks_of(std::slice::from_ref(signing))?)?,
        )?;
        println!(
            "{}",
            pretty(&json!({"signing_key": signing, "jwks": jwks_path, "dpop_key": dpop}))?
        );
        Ok(())
    }
}
