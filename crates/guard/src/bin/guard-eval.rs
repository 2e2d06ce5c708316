//! `guard-eval`: generate the labelled evaluation corpus (or read one), run the distillation
//! detector over it in event time and report detection per kind of traffic.
//!
//! ```text
//! guard-eval [--seed N] [--scale F] [--days N] [--small] [--fpr F] [--settings FILE.json]
//!            [--threshold F] [--min-requests N] [--human-prompts FILE] [--input CORPUS.jsonl]
//!            [--json]
//! guard-eval --generate OUT.jsonl [--public OUT.txt] [--seed N] [--scale F] [--days N] [--small]
//!            [--human-prompts FILE]
//! guard-eval --families [--seed N] [--scale F] [--days N] [--fpr F] [--settings FILE] [--json]
//! guard-eval --families --generate OUT.jsonl [--seed N] [--scale F] [--days N]
//! ```
//! `--families` runs the leave-one-family-out evaluation (`tollgate_guard::lofo`) over the family
//! corpus (`tollgate_guard::families`): thresholds fitted on the other families, figures on the
//! held-out one; `--fpr` is then the distribution test's target false-positive rate.
//! The public prompt set (benchmark overlap) is built in; pass `--settings` with
//! `benchmark_files` to use files instead. `--human-prompts FILE` (JSON Lines written by
//! `scripts/fetch_prompts.sh`, or `crates/guard/testdata/human_prompts/sample.jsonl`) makes
//! consumer chat and coding assistants use real human prompts and the public prompt set (benchmark
//! evaluations, public-set replay, the benchmark filter) the public half of them; `--public` then
//! writes JSON Lines (`{"prompt": …}`, the prompts span lines).

use std::io::Write;

use anyhow::{Context, bail};
use tollgate_guard::corpus::{CorpusConfig, generate, public_set};
use tollgate_guard::human::HumanPrompts;
use tollgate_guard::{Detector, DetectorSettings, eval};

fn main() -> anyhow::Result<()> {
    let mut cfg = CorpusConfig::default();
    let mut settings = DetectorSettings::default();
    let (mut json, mut input, mut out_path, mut public_path) = (false, None, None, None);
    let mut fpr = 0.01;
    let mut args = std::env::args().skip(1);
    let mut threshold = None;
    let mut min_requests = None;
    let mut families = false;
    let (mut seed, mut scale, mut days) = (None, None, None);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--seed" => seed = Some(val()?.parse()?),
            "--scale" => scale = Some(val()?.parse()?),
            "--days" => days = Some(val()?.parse()?),
            "--families" => families = true,
            "--small" => cfg.small = true,
            "--fpr" => fpr = val()?.parse()?,
            "--json" => json = true,
            "--input" => input = Some(val()?),
            "--generate" => out_path = Some(val()?),
            "--public" => public_path = Some(val()?),
            "--threshold" => threshold = Some(val()?.parse()?),
            "--min-requests" => min_requests = Some(val()?.parse()?),
            "--human-prompts" => {
                let p = val()?;
                let h = HumanPrompts::load(std::path::Path::new(&p))
                    .with_context(|| format!("reading human prompts {p}"))?;
                if h.is_empty() {
                    bail!("{p} holds no prompts");
                }
                cfg.human = Some(h);
            }
            "--settings" => {
                let p = val()?;
                let text = std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))?;
                settings = serde_json::from_str(&text).with_context(|| format!("parsing {p}"))?;
            }
            "-h" | "--help" => {
                let mut o = std::io::stdout().lock();
                writeln!(
                    o,
                    "usage: guard-eval [--families] [--seed N] [--scale F] [--days N] [--small] [--fpr F] [--settings FILE] [--threshold F] [--min-requests N] [--human-prompts FILE] [--input FILE] [--json] | --generate FILE [--public FILE] [--human-prompts FILE]"
                )?;
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if let Some(t) = threshold {
        settings.flag_threshold = t;
    }
    if families {
        let mut fc = tollgate_guard::families::FamilyConfig::default();
        fc.seed = seed.unwrap_or(fc.seed);
        fc.scale = scale.unwrap_or(fc.scale);
        fc.days = days.unwrap_or(fc.days);
        if let Some(m) = min_requests {
            settings.min_requests = m;
        }
        if let Some(path) = out_path {
            let corpus = tollgate_guard::families::generate(&fc);
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&path).with_context(|| format!("creating {path}"))?,
            );
            for l in &corpus.lines {
                writeln!(f, "{l}")?;
            }
            f.flush()?;
            return Ok(());
        }
        let report = tollgate_guard::lofo::evaluate(&fc, &settings, fpr)?;
        let mut o = std::io::stdout().lock();
        if json {
            serde_json::to_writer_pretty(&mut o, &report)?;
            writeln!(o)?;
        } else {
            write!(o, "{}", tollgate_guard::lofo::render(&report))?;
        }
        return Ok(());
    }
    cfg.seed = seed.unwrap_or(cfg.seed);
    cfg.scale = scale.unwrap_or(cfg.scale);
    cfg.days = days.unwrap_or(cfg.days);
    if let Some(m) = min_requests {
        settings.min_requests = m;
    }
    if let Some(path) = out_path {
        let corpus = generate(&cfg);
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {path}"))?,
        );
        for l in &corpus.lines {
            writeln!(f, "{l}")?;
        }
        f.flush()?;
        if let Some(p) = public_path {
            let set = public_set(&cfg);
            let text = if cfg.human.is_some() {
                set.iter()
                    .map(|x| serde_json::json!({ "prompt": x }).to_string() + "\n")
                    .collect::<String>()
            } else {
                set.join("\n") + "\n"
            };
            std::fs::write(&p, text).with_context(|| format!("writing {p}"))?;
        }
        return Ok(());
    }
    let builtin = if settings.benchmark_files.is_empty() {
        public_set(&cfg)
    } else {
        Vec::new()
    };
    let detector = Detector::with_benchmark_prompts(settings, &builtin)?;
    let report = match input {
        Some(p) => {
            let f = std::fs::File::open(&p).with_context(|| format!("opening {p}"))?;
            eval::evaluate(&detector, std::io::BufReader::new(f), fpr)?
        }
        None => {
            let corpus = generate(&cfg);
            let text = corpus.lines.join("\n");
            eval::evaluate(&detector, text.as_bytes(), fpr)?
        }
    };
    let mut o = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut o, &report)?;
        writeln!(o)?;
    } else {
        write!(o, "{}", eval::render(&report))?;
    }
    Ok(())
}
