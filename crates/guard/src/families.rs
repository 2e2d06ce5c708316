//! Families of traffic for the leave-one-family-out evaluation ([`crate::lofo`]).
//!
//! Every kind of account (benign or harvesting) comes in [`FAMILIES`] families. A family is a
//! variant of its kind with its own wrappers and phrasings, request parameters, rates, timing
//! structure and address layout, drawn from lists that no other family of the kind uses, so a
//! threshold fitted on the other families meets the held-out one as unseen traffic. The benign
//! side includes hard negatives: translation and data-labelling pipelines (templates whose slots
//! range over every topic), agents with tool calls, a weekly evaluation harness, classrooms
//! behind one NAT, customers who legitimately send many single-turn prompts, and heavy product
//! customers (one of them with logprobs). Organization names carry the label
//! (`fam.<kind>.f<family>.<n>`); the detector never looks at names.
//!
//! This generator, like [`crate::corpus`], is written by the detector's authors: held-out
//! families are unseen by the fitted threshold, not by the people who wrote the signals.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::corpus::{
    ASPECTS, AUDIENCES, BRANDS, COLORS, COMMENT_BITS, DOMAINS, GENRES, LANGUAGES, PRODUCTS,
    TICKET_BITS, fill, math_problem, public_prompts, question,
};
use crate::sketch::SplitMix;

/// Families per kind.
pub const FAMILIES: u32 = 4;

/// Share of a `hidden_segment` account's traffic that is harvesting, by family.
pub fn attacker_share(family: u32) -> f64 {
    [0.2, 0.1, 0.3, 0.05][family as usize % 4]
}

/// Kinds of account in the family corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FamKind {
    Chat,
    Product,
    Translation,
    Labelling,
    ToolAgent,
    WeeklyEval,
    Classroom,
    SingleTurn,
    Coding,
    Rag,
    PublicReplay,
    SelfInstruct,
    CotRubric,
    Logprob,
    HiddenSegment,
    Hydra,
}

impl FamKind {
    pub const ALL: [FamKind; 16] = [
        FamKind::Chat,
        FamKind::Product,
        FamKind::Translation,
        FamKind::Labelling,
        FamKind::ToolAgent,
        FamKind::WeeklyEval,
        FamKind::Classroom,
        FamKind::SingleTurn,
        FamKind::Coding,
        FamKind::Rag,
        FamKind::PublicReplay,
        FamKind::SelfInstruct,
        FamKind::CotRubric,
        FamKind::Logprob,
        FamKind::HiddenSegment,
        FamKind::Hydra,
    ];
    pub fn name(self) -> &'static str {
        match self {
            FamKind::Chat => "consumer_chat",
            FamKind::Product => "product_heavy",
            FamKind::Translation => "translation_pipeline",
            FamKind::Labelling => "labelling_pipeline",
            FamKind::ToolAgent => "tool_agent",
            FamKind::WeeklyEval => "weekly_eval",
            FamKind::Classroom => "classroom_nat",
            FamKind::SingleTurn => "single_turn_heavy",
            FamKind::Coding => "coding_assistant",
            FamKind::Rag => "rag_qa",
            FamKind::PublicReplay => "public_replay",
            FamKind::SelfInstruct => "self_instruct",
            FamKind::CotRubric => "cot_rubric",
            FamKind::Logprob => "logprob_harvest",
            FamKind::HiddenSegment => "hidden_segment",
            FamKind::Hydra => "hydra_campaign",
        }
    }
    pub fn harvesting(self) -> bool {
        matches!(
            self,
            FamKind::PublicReplay
                | FamKind::SelfInstruct
                | FamKind::CotRubric
                | FamKind::Logprob
                | FamKind::HiddenSegment
                | FamKind::Hydra
        )
    }
    /// Harvesting kinds whose every request asks for reasoning, rubrics or output
    /// distributions (median requests-to-flag is reported for them).
    pub fn blatant(self) -> bool {
        matches!(
            self,
            FamKind::PublicReplay | FamKind::CotRubric | FamKind::Logprob
        )
    }
    fn from_name(s: &str) -> Option<FamKind> {
        FamKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Label of a family-corpus organization: kind, family and whether it is a heavy customer.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub kind: FamKind,
    pub family: u32,
    pub heavy: bool,
}

/// Parse `fam.<kind>.f<family>.<n>[.heavy]`.
pub fn label(org: &str) -> Option<Label> {
    let mut p = org.split('.');
    if p.next()? != "fam" {
        return None;
    }
    let kind = FamKind::from_name(p.next()?)?;
    let family = p.next()?.strip_prefix('f')?.parse().ok()?;
    p.next()?;
    let heavy = p.next() == Some("heavy");
    Some(Label {
        kind,
        family,
        heavy,
    })
}

/// Settings of the family corpus.
#[derive(Clone, Debug)]
pub struct FamilyConfig {
    pub seed: u64,
    pub days: u32,
    pub scale: f64,
}

impl Default for FamilyConfig {
    fn default() -> Self {
        Self {
            seed: 11,
            days: 8,
            scale: 0.5,
        }
    }
}

/// How requests are spread in time.
#[derive(Clone, Copy, Debug)]
enum Timing {
    /// Poisson around the clock.
    Poisson,
    /// People: a day/night curve in the given UTC offset.
    Diurnal(i64),
    /// A machine: fixed interval with small jitter (fraction of the interval).
    Machine(f64),
    /// Bursts of requests every so many minutes.
    Bursts { every_min: u64, len_min: u64 },
    /// Office hours on weekdays only (UTC offset).
    Office(i64),
}

/// Where requests come from.
#[derive(Clone, Debug)]
enum Layout {
    One(String),
    Pool(Vec<String>),
    /// A fresh address in a random network per request (residential proxies).
    Spread(u64),
}

impl Layout {
    fn pick(&self, r: &mut SplitMix) -> String {
        match self {
            Layout::One(a) => a.clone(),
            Layout::Pool(p) => r.pick(p).clone(),
            Layout::Spread(base) => format!(
                "{}.{}.{}.{}",
                11 + (base + r.below(180)) % 200,
                r.below(250),
                r.below(250),
                1 + r.below(250)
            ),
        }
    }
}

struct Gen {
    r: SplitMix,
    start: i64,
    days: u32,
    scale: f64,
    out: Vec<(i64, u64, String)>,
    seq: u64,
    public: Vec<String>,
}

struct Line<'a> {
    t: i64,
    org: &'a str,
    key: &'a str,
    ip: String,
    endpoint: &'static str,
    body: Value,
    output_tokens: u64,
}

fn body(model: &str, system: Option<&str>, user: &str, extra: &[(&str, Value)]) -> Value {
    let mut msgs = Vec::new();
    if let Some(s) = system {
        msgs.push(json!({"role": "system", "content": s}));
    }
    msgs.push(json!({"role": "user", "content": user}));
    let mut b = json!({"model": model, "messages": msgs});
    if let Some(o) = b.as_object_mut() {
        for (k, v) in extra {
            o.insert((*k).to_owned(), v.clone());
        }
    }
    b
}

fn org(kind: FamKind, family: u32, n: u64, heavy: bool) -> String {
    format!(
        "fam.{}.f{family}.{n:02}{}",
        kind.name(),
        if heavy { ".heavy" } else { "" }
    )
}

impl Gen {
    fn end(&self) -> i64 {
        self.start + i64::from(self.days) * 86_400
    }

    fn emit(&mut self, l: Line<'_>) {
        let time = OffsetDateTime::from_unix_timestamp(l.t)
            .ok()
            .and_then(|x| x.format(&Rfc3339).ok())
            .unwrap_or_default();
        let line = json!({
            "time": time, "organization": l.org, "key": l.key, "client_ip": l.ip,
            "endpoint": l.endpoint, "body": l.body, "output_tokens": l.output_tokens,
        });
        self.seq += 1;
        self.out.push((l.t, self.seq, line.to_string()));
    }

    fn chat(&mut self, t: i64, org: &str, key: &str, ip: String, body: Value, out: u64) {
        self.emit(Line {
            t,
            org,
            key,
            ip,
            endpoint: "/v1/chat/completions",
            body,
            output_tokens: out,
        });
    }

    fn times(&mut self, per_day: f64, timing: Timing, from: i64, to: i64) -> Vec<i64> {
        let per_day = per_day * self.scale;
        let mut ts = Vec::new();
        if per_day <= 0.0 || to <= from {
            return ts;
        }
        let gap = 86_400.0 / per_day;
        match timing {
            Timing::Machine(jitter) => {
                let mut t = from as f64 + self.r.unit() * gap;
                while t < to as f64 {
                    ts.push(t as i64);
                    t += gap * (1.0 - jitter + 2.0 * jitter * self.r.unit());
                }
            }
            Timing::Bursts { every_min, len_min } => {
                let every = (every_min * 60) as f64;
                let per_burst = (per_day * every / 86_400.0).max(1.0);
                let mut b = from as f64 + self.r.unit() * every;
                while b < to as f64 {
                    let n = (per_burst * (0.5 + self.r.unit())).round() as u64;
                    for _ in 0..n {
                        ts.push((b + self.r.unit() * (len_min * 60) as f64) as i64);
                    }
                    b += every * (0.8 + 0.4 * self.r.unit());
                }
            }
            Timing::Poisson | Timing::Diurnal(_) | Timing::Office(_) => {
                let peak = match timing {
                    Timing::Diurnal(_) => 2.2,
                    Timing::Office(_) => 5.0,
                    _ => 1.0,
                };
                let mut t = from as f64;
                loop {
                    t += self.r.exp(gap / peak);
                    if t >= to as f64 {
                        break;
                    }
                    let keep = match timing {
                        Timing::Diurnal(tz) => {
                            let h = ((t as i64 + tz * 3600).rem_euclid(86_400)) / 3600;
                            match h {
                                0..=5 => 0.03,
                                6..=7 => 0.3,
                                8..=18 => 1.0,
                                19..=22 => 0.8,
                                _ => 0.3,
                            }
                        }
                        Timing::Office(tz) => {
                            let local = t as i64 + tz * 3600;
                            let h = local.rem_euclid(86_400) / 3600;
                            // Day 0 of the corpus is a Monday.
                            let wd = local.div_euclid(86_400).rem_euclid(7);
                            if wd < 5 && (9..17).contains(&h) {
                                1.0
                            } else {
                                0.0
                            }
                        }
                        _ => 1.0,
                    };
                    if self.r.chance(keep) {
                        ts.push(t as i64);
                    }
                }
            }
        }
        ts.sort_unstable();
        ts
    }

    fn harvest_question(&mut self) -> String {
        match self.r.below(10) {
            0..=3 => self.public[self.r.below(self.public.len() as u64) as usize].clone(),
            4..=5 => math_problem(&mut self.r),
            _ => question(&mut self.r),
        }
    }

    /// An encyclopaedic topic from any domain.
    fn topic(&mut self) -> &'static str {
        let (_, c) = *self.r.pick(DOMAINS);
        let t: &&'static str = self.r.pick(c);
        t
    }

    /// A sentence about a random topic (the text a pipeline translates or labels).
    fn sentence(&mut self) -> String {
        let q = question(&mut self.r);
        let t = self.topic();
        match self.r.below(4) {
            0 => format!("Our latest report on {t} found mixed results. {q}"),
            1 => format!("I read that {t} changed a lot in recent years, is that true?"),
            2 => format!(
                "The committee discussed {t} and {} at length.",
                self.topic()
            ),
            _ => format!("{q} Customers keep asking about {t}."),
        }
    }

    // --- benign ------------------------------------------------------------------------------

    fn chat_app(&mut self, o: &str, f: u32, n: u64, per_day: f64, harvest: Option<u32>) {
        let tz = self.r.below(24) as i64 - 11;
        let backend = Layout::Pool(
            (0..1 + f % 3)
                .map(|k| format!("172.{}.{}.{}", 16 + f, n % 250, 10 + k))
                .collect(),
        );
        let system = [
            "You are a friendly assistant.",
            "You are Aria, the helpful assistant of a travel app.",
            "Be concise and kind.",
            "You help students with homework questions.",
        ][f as usize % 4];
        let users = 20 + self.r.below(200);
        let starts = self.times(per_day / 3.0, Timing::Diurnal(tz), self.start, self.end());
        for t0 in starts {
            let user_id = format!("u{}", self.r.below(users));
            let turns = 1 + self.r.below(5);
            let mut msgs = vec![json!({"role": "system", "content": system})];
            let mut t = t0;
            for i in 0..turns {
                let text = if i == 0 {
                    question(&mut self.r)
                } else {
                    let f = *self.r.pick(crate::corpus::CHAT_FOLLOWUPS);
                    fill(&mut self.r, f)
                };
                let text = if self.r.chance(0.04) {
                    format!("{text} Can you explain step by step?")
                } else {
                    text
                };
                msgs.push(json!({"role": "user", "content": text}));
                let b = json!({"model": "acme-large", "messages": msgs, "temperature": 0.7,
                    "stream": true, "user": user_id});
                let ip = backend.pick(&mut self.r);
                let key = format!("app-{}", self.r.below(2));
                let out = 50 + self.r.below(400);
                self.chat(t, o, &key, ip, b, out);
                msgs.push(json!({"role": "assistant", "content": format!("Sure. {}", question(&mut self.r))}));
                t += 20 + self.r.below(240) as i64;
            }
        }
        // Harvesting confined to one key and one backend address: a share of the traffic that
        // depends on the family (see [`attacker_share`]).
        if let Some(style) = harvest {
            let ip = format!("172.{}.{}.200", 16 + f, n % 250);
            let share = attacker_share(f);
            let rate = per_day * share / (1.0 - share);
            let ts = self.times(rate, Timing::Poisson, self.start, self.end());
            for t in ts {
                let q = self.harvest_question();
                let (b, out) = match style {
                    0 => (
                        body(
                            "acme-large",
                            None,
                            &format!("{q}\nExplain your reasoning in detail before the answer."),
                            &[("max_tokens", json!(4096))],
                        ),
                        800 + self.r.below(1500),
                    ),
                    1 => (
                        body(
                            "acme-large",
                            None,
                            &q,
                            &[("logprobs", json!(true)), ("top_logprobs", json!(10))],
                        ),
                        300 + self.r.below(300),
                    ),
                    2 => (
                        body(
                            "acme-large",
                            Some(system),
                            &format!(
                                "Write a {} about {} for a {}.",
                                self.r.pick(GENRES),
                                self.topic(),
                                self.r.pick(AUDIENCES)
                            ),
                            &[("max_tokens", json!(3000)), ("temperature", json!(0.8))],
                        ),
                        900 + self.r.below(1500),
                    ),
                    _ => (
                        body(
                            "acme-large",
                            None,
                            &format!(
                                "Grade the response below on a scale of 1 to 10 and justify your answer.\nQuestion: {q}\nResponse: {}",
                                question(&mut self.r)
                            ),
                            &[("max_tokens", json!(2000))],
                        ),
                        500 + self.r.below(900),
                    ),
                };
                self.chat(t, o, "batch-export", ip.clone(), b, out);
            }
        }
    }

    fn product(&mut self, o: &str, f: u32, per_day: f64) {
        let ips = Layout::Pool(
            (0..4)
                .map(|k| format!("10.{}.7.{}", 100 + f, 10 + k))
                .collect(),
        );
        let ts = self.times(per_day, Timing::Poisson, self.start, self.end());
        for t in ts {
            let (system, user, extra, out): (Option<&str>, String, Vec<(&str, Value)>, u64) =
                match f {
                    0 => (
                        None,
                        format!(
                            "Write a one-sentence alt text for a product photo. Product: {} {} in {}, SKU {}.",
                            self.r.pick(BRANDS),
                            self.r.pick(PRODUCTS),
                            self.r.pick(COLORS),
                            10_000 + self.r.below(90_000)
                        ),
                        vec![("max_tokens", json!(120)), ("temperature", json!(0.2))],
                        20 + self.r.below(60),
                    ),
                    1 => (
                        Some("You are a content moderation classifier."),
                        format!(
                            "Classify this comment for harassment, hate or spam. Explain your reasoning briefly, then give the label.\nComment: \"{}, {}\"",
                            self.r.pick(COMMENT_BITS),
                            self.r.pick(COMMENT_BITS)
                        ),
                        vec![("max_tokens", json!(200)), ("seed", json!(7))],
                        40 + self.r.below(100),
                    ),
                    2 => (
                        Some("Answer with one label: positive, negative or neutral."),
                        format!(
                            "Review of the {} {}: {}",
                            self.r.pick(BRANDS),
                            self.r.pick(PRODUCTS),
                            self.r.pick(TICKET_BITS)
                        ),
                        vec![
                            ("logprobs", json!(true)),
                            ("top_logprobs", json!(3)),
                            ("max_tokens", json!(2)),
                        ],
                        1,
                    ),
                    _ => (
                        None,
                        format!(
                            "Extract the order number and issue as JSON.\nMessage: order {} — {}.",
                            100_000 + self.r.below(900_000),
                            self.r.pick(TICKET_BITS)
                        ),
                        vec![("max_tokens", json!(150)), ("temperature", json!(0.0))],
                        30 + self.r.below(40),
                    ),
                };
            let ip = ips.pick(&mut self.r);
            let b = body("acme-small", system, &user, &extra);
            self.chat(t, o, "backend", ip, b, out);
        }
    }

    fn translation(&mut self, o: &str, f: u32, per_day: f64) {
        let ip = format!("10.{}.9.4", 110 + f);
        let timing = [
            Timing::Machine(0.3),
            Timing::Poisson,
            Timing::Bursts {
                every_min: 60,
                len_min: 20,
            },
            Timing::Machine(0.05),
        ][f as usize % 4];
        let ts = self.times(per_day, timing, self.start, self.end());
        for t in ts {
            let lang = *self.r.pick(LANGUAGES);
            let text = self.sentence();
            let (system, user) = match f {
                0 => (
                    None,
                    format!("Translate the following text into {lang}:\n{text}"),
                ),
                1 => (
                    Some("You are a professional translator. Keep formatting."),
                    format!("Target language: {lang}\nSource: {text}"),
                ),
                2 => (None, format!("{text}\n\nTranslate the above into {lang}.")),
                _ => (
                    Some("Localize product content."),
                    format!("Localize for the {lang} market, keep the meaning: {text}"),
                ),
            };
            let words = user.split_whitespace().count() as u64;
            let b = body(
                "acme-small",
                system,
                &user,
                &[("max_tokens", json!(1024)), ("temperature", json!(0.1))],
            );
            self.chat(t, o, "translate", ip.clone(), b, words * 2);
        }
    }

    fn labelling(&mut self, o: &str, f: u32, per_day: f64) {
        let ips = Layout::Pool(
            (0..2)
                .map(|k| format!("10.{}.3.{}", 120 + f, 5 + k))
                .collect(),
        );
        let timing = [
            Timing::Machine(0.5),
            Timing::Bursts {
                every_min: 120,
                len_min: 30,
            },
            Timing::Poisson,
            Timing::Office(1),
        ][f as usize % 4];
        let ts = self.times(per_day, timing, self.start, self.end());
        for t in ts {
            let text = self.sentence();
            let user = match f {
                0 => format!(
                    "Label the topic of the text with one of: science, history, finance, health, arts, sport. Text: {text}"
                ),
                1 => format!(
                    "Is the following text toxic? Answer yes or no, then give a confidence from 1 to 5.\n{text}"
                ),
                2 => format!(
                    "Annotate the named entities in this sentence as JSON spans.\nSentence: {text}"
                ),
                _ => format!(
                    "Does this message need a human reply? Think step by step, then answer yes or no.\nMessage: {text}"
                ),
            };
            let mut extra = vec![("max_tokens", json!(64)), ("temperature", json!(0.0))];
            if f == 1 {
                extra.push(("logprobs", json!(true)));
            }
            if f == 2 {
                extra.push(("n", json!(3)));
                extra[1] = ("temperature", json!(0.7));
            }
            let ip = ips.pick(&mut self.r);
            let b = body("acme-small", None, &user, &extra);
            let out = 5 + self.r.below(60);
            self.chat(t, o, "labeller", ip, b, out);
        }
    }

    fn tool_agent(&mut self, o: &str, f: u32, n: u64, per_day: f64) {
        let ip = format!("10.{}.{}.8", 130 + f, n);
        let tools = json!([
            {"type": "function", "function": {"name": "search_docs", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
        ]);
        let tasks = self.times(per_day / 4.0, Timing::Diurnal(2), self.start, self.end());
        for t0 in tasks {
            let goal = format!(
                "{} Use the tools if needed and plan step by step.",
                question(&mut self.r)
            );
            let mut msgs = vec![
                json!({"role": "system", "content": "You are an agent. Call tools when useful."}),
                json!({"role": "user", "content": goal}),
            ];
            let mut t = t0;
            for step in 0..2 + self.r.below(4) {
                let b = json!({"model": "acme-large", "messages": msgs, "tools": tools,
                    "tool_choice": "auto", "temperature": 0.2 + 0.1 * f64::from(f)});
                let out = 30 + self.r.below(200);
                self.chat(t, o, "agent", ip.clone(), b, out);
                msgs.push(json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": format!("call_{step}"), "type": "function",
                     "function": {"name": "search_docs", "arguments": "{\"q\":\"x\"}"}}]}));
                msgs.push(
                    json!({"role": "tool", "tool_call_id": format!("call_{step}"),
                    "content": format!("Result: {}", question(&mut self.r))}),
                );
                t += 2 + self.r.below(20) as i64;
            }
        }
    }

    /// A benchmark harness run weekly (day 0 and day 7 of the corpus).
    fn weekly_eval(&mut self, o: &str, f: u32) {
        let ip = format!("10.{}.5.5", 140 + f);
        let count = 200 + self.r.below(300) as usize;
        let offset = self.r.below(200) as usize;
        let mut day = 0;
        while i64::from(day) * 86_400 < self.end() - self.start {
            let mut t = self.start + i64::from(day) * 86_400 + 3600 * (8 + i64::from(f));
            for i in 0..count {
                let item = self.public[(offset + i) % self.public.len()].clone();
                let (user, extra): (String, Vec<(&str, Value)>) = match f {
                    0 => (item, vec![("temperature", json!(0.0))]),
                    1 => (
                        format!("{item}\nLet's think step by step."),
                        vec![("temperature", json!(0.0)), ("max_tokens", json!(1024))],
                    ),
                    2 => (
                        item,
                        vec![("logprobs", json!(true)), ("top_logprobs", json!(5))],
                    ),
                    _ => (
                        format!("Question: {item}\nAnswer:"),
                        vec![("temperature", json!(0.0)), ("max_tokens", json!(16))],
                    ),
                };
                let b = body("acme-large", None, &user, &extra);
                let out = 20 + self.r.below(400);
                self.chat(t, o, "eval", ip.clone(), b, out);
                t += 1 + self.r.below(6) as i64;
            }
            day += 7;
        }
    }

    /// Students behind one school NAT address, each with its own account, asking homework
    /// questions (often "step by step") during shared class times.
    fn classroom(&mut self, f: u32, students: u64) {
        let nat = format!("100.{}.44.1", 64 + f);
        let tz = [1i64, -5, 8, 3][f as usize % 4];
        for s in 0..students {
            let o = org(FamKind::Classroom, f, s, false);
            for day in 0..self.days {
                let local_day = i64::from(day);
                if local_day.rem_euclid(7) >= 5 || !self.r.chance(0.8) {
                    continue;
                }
                for class_hour in [9i64, 13] {
                    let start = self.start + local_day * 86_400 + (class_hour - tz) * 3600;
                    let k = 2 + self.r.below(8);
                    let mut t = start + self.r.below(600) as i64;
                    for _ in 0..k {
                        let q = match self.r.below(3) {
                            0 => math_problem(&mut self.r),
                            _ => question(&mut self.r),
                        };
                        let user = if self.r.chance(0.5) {
                            format!("{q} Explain step by step please.")
                        } else {
                            q
                        };
                        let b = body("acme-small", None, &user, &[("temperature", json!(0.7))]);
                        let out = 100 + self.r.below(500);
                        self.chat(t, &o, "student", nat.clone(), b, out);
                        t += 60 + self.r.below(400) as i64;
                    }
                }
            }
        }
    }

    /// A customer that legitimately sends many single-turn prompts (search rewriting, FAQ
    /// answers, autocomplete) over every topic.
    fn single_turn(&mut self, o: &str, f: u32, per_day: f64) {
        let ips = Layout::Pool(
            (0..3)
                .map(|k| format!("10.{}.6.{}", 150 + f, 1 + k))
                .collect(),
        );
        let ts = self.times(per_day, Timing::Diurnal(-1), self.start, self.end());
        for t in ts {
            let topic = self.topic();
            let user = match f {
                0 => format!("Rewrite this search query to be more specific: {topic}"),
                1 => format!(
                    "Answer this FAQ in two sentences: {}",
                    question(&mut self.r)
                ),
                2 => format!("Suggest five related searches for \"{topic}\"."),
                _ => format!("Give a one-line definition of {topic}."),
            };
            let b = body(
                "acme-small",
                None,
                &user,
                &[("max_tokens", json!(100)), ("temperature", json!(0.3))],
            );
            let ip = ips.pick(&mut self.r);
            let out = 10 + self.r.below(80);
            self.chat(t, o, "search", ip, b, out);
        }
    }

    fn coding(&mut self, o: &str, f: u32, n: u64, per_day: f64) {
        let ip = format!("10.{}.{}.2", 160 + f, n);
        let lang = ["Python", "Rust", "Go", "TypeScript"][f as usize % 4];
        let ts = self.times(per_day, Timing::Diurnal(f as i64), self.start, self.end());
        for t in ts {
            let user = format!(
                "{} this {lang} function:\n```\ndef {}_{}(rows):\n    return [r for r in rows if r]\n```",
                self.r
                    .pick(&["Fix the bug in", "Write tests for", "Refactor", "Explain"]),
                self.r.pick(&["parse", "load", "merge"]),
                self.r.pick(&["rows", "events", "users"])
            );
            let b = body(
                "acme-large",
                Some("You are a coding assistant."),
                &user,
                &[],
            );
            let out = 100 + self.r.below(600);
            self.chat(t, o, "ide", ip.clone(), b, out);
        }
    }

    fn rag(&mut self, o: &str, f: u32, n: u64, per_day: f64) {
        let ip = format!("10.{}.{}.3", 170 + f, n);
        let (d, cs) = *self.r.pick(DOMAINS);
        let ts = self.times(per_day, Timing::Office(f as i64), self.start, self.end());
        for t in ts {
            let c = *self.r.pick(cs);
            let user = format!(
                "Context:\n[doc {}] In {d}, {c} is covered in section {}.\nQuestion: what does the manual say about {c}?",
                self.r.below(500),
                1 + self.r.below(30)
            );
            let b = body(
                "acme-large",
                Some("Answer only from the context."),
                &user,
                &[("temperature", json!(0.0))],
            );
            let out = 80 + self.r.below(300);
            self.chat(t, o, "rag", ip.clone(), b, out);
        }
    }

    // --- harvesting --------------------------------------------------------------------------

    fn layout(&mut self, f: u32, n: u64) -> Layout {
        match f % 4 {
            0 => Layout::One(format!("198.18.{}.{}", n, 7 + f)),
            1 => Layout::Pool(
                (0..5)
                    .map(|k| format!("198.18.{}.{}", 10 + k * 17, 30 + n))
                    .collect(),
            ),
            2 => Layout::Spread(n * 31 + u64::from(f)),
            _ => Layout::Pool((0..2).map(|k| format!("198.19.{n}.{}", 40 + k)).collect()),
        }
    }

    fn timing(&mut self, f: u32) -> Timing {
        match f % 4 {
            0 => Timing::Poisson,
            1 => Timing::Machine(0.2),
            2 => Timing::Bursts {
                every_min: 90,
                len_min: 25,
            },
            _ => Timing::Diurnal(3),
        }
    }

    fn public_replay(&mut self, o: &str, f: u32, n: u64, per_day: f64) {
        let layout = self.layout(f, n);
        let timing = self.timing(f);
        let wrappers: &[&str] = match f {
            0 => &[
                "{q}\nThink step by step and show your reasoning.",
                "Please answer with a detailed explanation of each step.\n{q}",
            ],
            1 => &[
                "Q: {q}\nA: Let's think this through carefully, one step at a time.",
                "{q}\n\nWalk me through the solution.",
            ],
            2 => &[
                "Provide a thorough, rigorous answer with all derivations.\n\n{q}",
                "{q} Give a comprehensive answer that covers every consideration, then summarise.",
            ],
            _ => &[
                "### Instruction\n{q}\n### Response (reason first, answer last)",
                "{q}\nJustify your answer.",
            ],
        };
        let ts = self.times(per_day, timing, self.start, self.end());
        let max_tokens = [4096, 2048, 8192, 3000][f as usize % 4];
        for t in ts {
            let q = self.harvest_question();
            let user = self.r.pick(wrappers).replace("{q}", &q);
            let b = body(
                "acme-large",
                None,
                &user,
                &[
                    ("max_tokens", json!(max_tokens)),
                    ("temperature", json!(0.7)),
                ],
            );
            let key = format!("k{}", self.r.below(1 + u64::from(f)));
            let ip = layout.pick(&mut self.r);
            let out = 500 + self.r.below(2000);
            self.chat(t, o, &key, ip, b, out);
        }
    }

    /// Combinatorial synthetic-data generation: a fixed narrow template whose slots range over
    /// encyclopaedic topics, one temperature, no `n`, long outputs, machine timing.
    fn self_instruct(&mut self, o: &str, f: u32, n: u64, per_day: f64) {
        let layout = self.layout(f + 1, n);
        let timing = [
            Timing::Machine(0.1),
            Timing::Machine(0.4),
            Timing::Poisson,
            Timing::Bursts {
                every_min: 30,
                len_min: 25,
            },
        ][f as usize % 4];
        let ts = self.times(per_day, timing, self.start, self.end());
        for t in ts {
            let topic = self.topic();
            let form = *self.r.pick(GENRES);
            let aud = *self.r.pick(AUDIENCES);
            let aspect = *self.r.pick(ASPECTS);
            let (system, user) = match f {
                0 => (None, format!("Write a {form} about {topic} for a {aud}.")),
                1 => (
                    Some("You are a data generator. Output only the requested text."),
                    format!("Topic: {topic}\nFormat: {form}\nReader: {aud}\nLength: long"),
                ),
                2 => (
                    None,
                    format!(
                        "Create a {form} that teaches {topic} to a {aud}, focusing on {aspect}."
                    ),
                ),
                _ => (
                    None,
                    format!(
                        "Compose an in-depth {form} on the subject of {topic}. Audience: {aud}."
                    ),
                ),
            };
            let b = body(
                "acme-large",
                system,
                &user,
                &[
                    (
                        "max_tokens",
                        json!([2048, 4096, 1500, 3000][f as usize % 4]),
                    ),
                    ("temperature", json!(0.9)),
                ],
            );
            let ip = layout.pick(&mut self.r);
            let out = 700 + self.r.below(1800);
            self.chat(t, o, "gen", ip, b, out);
        }
    }

    fn cot_rubric(&mut self, o: &str, f: u32, n: u64, per_day: f64) {
        let layout = self.layout(f + 2, n);
        let timing = self.timing(f + 1);
        let ts = self.times(per_day, timing, self.start, self.end());
        for t in ts {
            let q = self.harvest_question();
            let resp = question(&mut self.r);
            let user = match (f, self.r.below(2)) {
                (0, _) => format!(
                    "Using the rubric below, score the response on a scale of 1 to 10 and explain every step.\nRubric: correctness, clarity.\nQuestion: {q}\nResponse: {resp}"
                ),
                (1, 0) => format!(
                    "Which response is better, A or B? Explain.\nQ: {q}\nA: {resp}\nB: {}",
                    question(&mut self.r)
                ),
                (1, _) => format!("{q}\nShow your work."),
                (2, _) => format!(
                    "You are a strict grader. Evaluation criteria: accuracy, depth. Question: {q} Candidate answer: {resp} Give a score and a critique."
                ),
                _ => format!(
                    "Critique this answer and then write a better one with full reasoning.\nTask: {q}\nAnswer: {resp}"
                ),
            };
            let b = body("acme-large", None, &user, &[("max_tokens", json!(3000))]);
            let ip = layout.pick(&mut self.r);
            let out = 400 + self.r.below(1200);
            self.chat(t, o, "grader", ip, b, out);
        }
    }

    fn logprob(&mut self, o: &str, f: u32, n: u64, per_day: f64) {
        let layout = self.layout(f + 3, n);
        let timing = self.timing(f + 2);
        let ts = self.times(per_day, timing, self.start, self.end());
        for t in ts {
            let q = self.harvest_question();
            let ip = layout.pick(&mut self.r);
            match f {
                0 => self.emit(Line {
                    t,
                    org: o,
                    key: "lp",
                    ip,
                    endpoint: "/v1/completions",
                    body: json!({"model": "acme-large", "prompt": q, "max_tokens": 256, "logprobs": 5}),
                    output_tokens: 256,
                }),
                1 => {
                    let b = body(
                        "acme-large",
                        None,
                        &q,
                        &[("logprobs", json!(true)), ("top_logprobs", json!(20))],
                    );
                    self.chat(t, o, "lp", ip, b, 400);
                }
                2 => {
                    let b = body(
                        "acme-large",
                        Some("Answer fully."),
                        &q,
                        &[("n", json!(4)), ("temperature", json!(1.0))],
                    );
                    self.chat(t, o, "lp", ip, b, 1600);
                }
                _ => {
                    let b = body(
                        "acme-large",
                        None,
                        &q,
                        &[("logit_bias", json!({"50256": -100})), ("max_tokens", json!(1024))],
                    );
                    self.chat(t, o, "lp", ip, b, 700);
                }
            }
        }
    }

    /// 30 accounts of one campaign: a shared proxy pool of several addresses, bursts driven by
    /// one scheduler but spread over minutes, the same replay wrapper (lightly varied).
    fn hydra(&mut self, f: u32, accounts: u64) {
        let pool: Vec<String> = (0..[8u64, 12, 6, 10][f as usize % 4])
            .map(|k| format!("203.{}.{}.{}", 10 + f, 100 + k % 3, 20 + k))
            .collect();
        let spread_min = [3u64, 8, 5, 12][f as usize % 4];
        let wrapper = [
            "You will answer a question. Give a detailed, well-structured explanation, then the final answer.\n\nQuestion: {q}",
            "{q}\n\nRespond as an expert. Reason it out fully before you conclude.",
            "Task: answer the following as completely as you can, including the intermediate steps.\n{q}",
            "Instruction: {q}\nOutput: a long-form answer with justification.",
        ][f as usize % 4];
        let system = [
            "You are an expert tutor.",
            "",
            "You are a helpful assistant.",
            "",
        ][f as usize % 4];
        // Scheduler ticks every 45–120 minutes around the clock.
        let mut ticks = Vec::new();
        let mut t = self.start + self.r.below(3600) as i64;
        while t < self.end() {
            ticks.push(t);
            t += 60 * (45 + self.r.below(75)) as i64;
        }
        for a in 0..accounts {
            let o = org(FamKind::Hydra, f, a, false);
            let my: Vec<String> = (0..3).map(|_| self.r.pick(&pool).clone()).collect();
            let join = 0.25 + 0.35 * self.r.unit();
            let per_tick = 1 + self.r.below(3);
            let sep = if a % 2 == 0 { "\n\n" } else { "\n" };
            for &tick in &ticks {
                if !self.r.chance(join) {
                    continue;
                }
                let mut t = tick + self.r.below(spread_min * 60) as i64;
                for _ in 0..per_tick {
                    let q = self.harvest_question();
                    let user = wrapper.replace("\n\n", sep).replace("{q}", &q);
                    let sys = (!system.is_empty()).then_some(system);
                    let b = body("acme-large", sys, &user, &[("max_tokens", json!(4096))]);
                    let ip = self.r.pick(&my).clone();
                    let out = 500 + self.r.below(1500);
                    self.chat(t, &o, "main", ip, b, out);
                    t += 5 + self.r.below(40) as i64;
                }
            }
        }
    }
}

/// A generated family corpus: replay lines sorted by time.
pub struct FamilyCorpus {
    pub lines: Vec<String>,
}

/// Generate every family of every kind.
pub fn generate(cfg: &FamilyConfig) -> FamilyCorpus {
    let start = crate::corpus::corpus_start();
    let mut g = Gen {
        r: SplitMix::new(cfg.seed),
        start,
        days: cfg.days.max(1),
        scale: cfg.scale,
        out: Vec::new(),
        seq: 0,
        public: public_prompts(),
    };
    for f in 0..FAMILIES {
        let vary = |g: &mut Gen, x: f64| x * (0.6 + 0.8 * g.r.unit());
        for n in 0..6 {
            let rate = vary(&mut g, 150.0);
            g.chat_app(&org(FamKind::Chat, f, n, false), f, n, rate, None);
        }
        let rate = vary(&mut g, 3000.0);
        g.product(&org(FamKind::Product, f, 0, true), f, rate);
        let rate = vary(&mut g, 1500.0);
        g.translation(&org(FamKind::Translation, f, 0, true), f, rate);
        let rate = vary(&mut g, 2000.0);
        g.labelling(&org(FamKind::Labelling, f, 0, true), f, rate);
        for n in 0..2 {
            let rate = vary(&mut g, 300.0);
            g.tool_agent(&org(FamKind::ToolAgent, f, n, false), f, n, rate);
        }
        g.weekly_eval(&org(FamKind::WeeklyEval, f, 0, false), f);
        g.classroom(f, 12);
        for n in 0..2 {
            let rate = vary(&mut g, 2000.0);
            g.single_turn(
                &org(FamKind::SingleTurn, f, n, true),
                (f + n as u32) % 4,
                rate,
            );
        }
        for n in 0..2 {
            let rate = vary(&mut g, 100.0);
            g.coding(&org(FamKind::Coding, f, n, false), f, n, rate);
            let rate = vary(&mut g, 120.0);
            g.rag(&org(FamKind::Rag, f, n, false), f, n, rate);
        }
        for n in 0..2 {
            let rate = vary(&mut g, 500.0);
            g.public_replay(&org(FamKind::PublicReplay, f, n, false), f, n, rate);
            let rate = vary(&mut g, 500.0);
            g.self_instruct(&org(FamKind::SelfInstruct, f, n, false), f, n, rate);
        }
        let rate = vary(&mut g, 400.0);
        g.cot_rubric(&org(FamKind::CotRubric, f, 0, false), f, 0, rate);
        let rate = vary(&mut g, 500.0);
        g.logprob(&org(FamKind::Logprob, f, 0, false), f, 0, rate);
        let rate = vary(&mut g, 600.0);
        g.chat_app(
            &org(FamKind::HiddenSegment, f, 0, false),
            f,
            50,
            rate,
            Some(f),
        );
        g.hydra(f, 30);
    }
    g.out.sort_by_key(|(t, seq, _)| (*t, *seq));
    FamilyCorpus {
        lines: g.out.into_iter().map(|(_, _, l)| l).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_every_kind_has_every_family() {
        assert_eq!(
            label("fam.product_heavy.f2.00.heavy"),
            Some(Label {
                kind: FamKind::Product,
                family: 2,
                heavy: true
            })
        );
        assert_eq!(label("consumer_chat-1"), None);
        let c = generate(&FamilyConfig {
            seed: 3,
            days: 2,
            scale: 0.05,
        });
        let mut seen = std::collections::HashSet::new();
        for l in &c.lines {
            let v: Value = serde_json::from_str(l).unwrap();
            let o = v["organization"].as_str().unwrap();
            let lab = label(o).unwrap();
            seen.insert((lab.kind, lab.family));
        }
        for k in FamKind::ALL {
            for f in 0..FAMILIES {
                assert!(seen.contains(&(k, f)), "{k:?} f{f}");
            }
        }
    }
}
