//! Deterministic, seeded generator of realistic labelled traffic in the replay format, plus the
//! "public" prompt set (benchmark-like items) that harvesters replay and evaluators run once.
//! Organization names carry the kind (`<kind>-<n>`) so a corpus file is self-labelling; the
//! detector never looks at names.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::human::{HumanPrompt, HumanPrompts};
use crate::sketch::SplitMix;

/// Kind of account in the corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ConsumerChat,
    ProductTemplated,
    RagQa,
    CodingAssistant,
    BenchmarkEval,
    /// Benign cron jobs (on the hour, some also at :30) from one cloud network: bursts that
    /// start in the same minutes as other accounts' and must not be linked for it.
    ScheduledBatch,
    PublicReplay,
    SelfInstruct,
    CotRubric,
    LogprobHarvest,
    HydraCampaign,
    /// A campaign over 30 small accounts driven by one scheduler: no shared wrapper, no shared
    /// payment, bursts that start together. Campaign 0 runs from one /24, campaign 1 from
    /// addresses spread over many networks.
    SyncedCampaign,
    HiddenInProduct,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::ConsumerChat,
        Kind::ProductTemplated,
        Kind::RagQa,
        Kind::CodingAssistant,
        Kind::BenchmarkEval,
        Kind::ScheduledBatch,
        Kind::PublicReplay,
        Kind::SelfInstruct,
        Kind::CotRubric,
        Kind::LogprobHarvest,
        Kind::HydraCampaign,
        Kind::SyncedCampaign,
        Kind::HiddenInProduct,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Kind::ConsumerChat => "consumer_chat",
            Kind::ProductTemplated => "product_templated",
            Kind::RagQa => "rag_qa",
            Kind::CodingAssistant => "coding_assistant",
            Kind::BenchmarkEval => "benchmark_eval",
            Kind::ScheduledBatch => "scheduled_batch",
            Kind::PublicReplay => "public_replay",
            Kind::SelfInstruct => "self_instruct",
            Kind::CotRubric => "cot_rubric",
            Kind::LogprobHarvest => "logprob_harvest",
            Kind::HydraCampaign => "hydra_campaign",
            Kind::SyncedCampaign => "synced_campaign",
            Kind::HiddenInProduct => "hidden_in_product",
        }
    }
    pub fn harvesting(self) -> bool {
        matches!(
            self,
            Kind::PublicReplay
                | Kind::SelfInstruct
                | Kind::CotRubric
                | Kind::LogprobHarvest
                | Kind::HydraCampaign
                | Kind::SyncedCampaign
                | Kind::HiddenInProduct
        )
    }
    /// Campaigns split over many accounts (cluster recall is reported for them).
    pub fn campaign(self) -> bool {
        matches!(self, Kind::HydraCampaign | Kind::SyncedCampaign)
    }
    /// Kind from an organization name produced by this generator.
    pub fn from_org(org: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            org.strip_prefix(k.name())
                .is_some_and(|r| r.starts_with('-'))
        })
    }
}

/// Campaign (for cluster recall) of an organization name, e.g. `hydra_campaign-0-07` → `hydra_campaign-0`.
pub fn campaign_of(org: &str) -> Option<String> {
    if !Kind::from_org(org).is_some_and(Kind::campaign) {
        return None;
    }
    let mut parts = org.rsplitn(2, '-');
    parts.next();
    parts.next().map(str::to_owned)
}

/// Generation settings.
#[derive(Clone, Debug)]
pub struct CorpusConfig {
    pub seed: u64,
    pub days: u32,
    /// Multiplies request rates (1.0 ≈ 70k requests over 3 days).
    pub scale: f64,
    /// Small preset for the checked-in sample (fewer organizations).
    pub small: bool,
    /// Real human prompts: when set, consumer chat and coding assistants draw their prompts
    /// from the private half and the public prompt set is the public half (see
    /// [`crate::human`]); everything else stays synthetic.
    pub human: Option<HumanPrompts>,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            seed: 2,
            days: 3,
            scale: 1.0,
            small: false,
            human: None,
        }
    }
}

/// The public prompt set of a corpus: the public half of the human prompts when given (and not
/// empty), else the synthetic [`public_prompts`].
pub fn public_set(cfg: &CorpusConfig) -> Vec<String> {
    match &cfg.human {
        Some(h) if !h.public.is_empty() => h.public_texts(),
        _ => public_prompts(),
    }
}

/// A generated corpus: replay lines sorted by time.
pub struct Corpus {
    pub lines: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Vocabulary

pub(crate) const DOMAINS: &[(&str, &[&str])] = &[
    (
        "physics",
        &[
            "entropy",
            "momentum",
            "quantum tunneling",
            "the photoelectric effect",
            "electromagnetic induction",
            "special relativity",
            "thermal conductivity",
            "wave interference",
            "nuclear fission",
            "superconductivity",
            "angular momentum",
            "black body radiation",
        ],
    ),
    (
        "biology",
        &[
            "photosynthesis",
            "mitosis",
            "the immune response",
            "gene expression",
            "natural selection",
            "cellular respiration",
            "protein folding",
            "the nitrogen cycle",
            "enzyme kinetics",
            "neural plasticity",
            "symbiosis",
            "DNA replication",
        ],
    ),
    (
        "history",
        &[
            "the fall of the Roman Empire",
            "the industrial revolution",
            "the Treaty of Westphalia",
            "the Meiji restoration",
            "the printing press",
            "the Silk Road",
            "the French Revolution",
            "the Cold War",
            "the Renaissance",
            "the Ottoman Empire",
            "decolonization in Africa",
            "the Hanseatic League",
        ],
    ),
    (
        "cooking",
        &[
            "sourdough fermentation",
            "the Maillard reaction",
            "emulsifying a vinaigrette",
            "braising short ribs",
            "tempering chocolate",
            "making fresh pasta",
            "pickling vegetables",
            "sous vide cooking",
            "caramelizing onions",
            "proofing yeast",
            "curing salmon",
            "a French mother sauce",
        ],
    ),
    (
        "finance",
        &[
            "compound interest",
            "bond duration",
            "inflation hedging",
            "the price to earnings ratio",
            "dollar cost averaging",
            "options pricing",
            "a balance sheet",
            "index funds",
            "credit default swaps",
            "liquidity risk",
            "the yield curve",
            "portfolio diversification",
        ],
    ),
    (
        "programming",
        &[
            "recursion",
            "garbage collection",
            "a hash table",
            "dependency injection",
            "the actor model",
            "memory safety",
            "database indexing",
            "race conditions",
            "functional programming",
            "REST API design",
            "a binary search tree",
            "lazy evaluation",
        ],
    ),
    (
        "law",
        &[
            "contract consideration",
            "fair use",
            "adverse possession",
            "the statute of limitations",
            "tort negligence",
            "intellectual property licensing",
            "habeas corpus",
            "due process",
            "trademark dilution",
            "employment at will",
            "data protection law",
            "force majeure clauses",
        ],
    ),
    (
        "medicine",
        &[
            "hypertension",
            "type 2 diabetes",
            "antibiotic resistance",
            "vaccination schedules",
            "migraine treatment",
            "the placebo effect",
            "sleep apnea",
            "cholesterol management",
            "iron deficiency",
            "asthma triggers",
            "concussion recovery",
            "vitamin D",
        ],
    ),
    (
        "geography",
        &[
            "plate tectonics",
            "monsoon climates",
            "river deltas",
            "the Sahara desert",
            "glacial erosion",
            "urban heat islands",
            "coral reef ecosystems",
            "the Andes mountains",
            "population density",
            "groundwater aquifers",
            "volcanic islands",
            "the Gulf Stream",
        ],
    ),
    (
        "music",
        &[
            "counterpoint",
            "the circle of fifths",
            "syncopation",
            "sonata form",
            "jazz improvisation",
            "equal temperament",
            "polyrhythm",
            "orchestration",
            "the blues scale",
            "harmonic minor",
            "baroque ornamentation",
            "modal interchange",
        ],
    ),
    (
        "sports",
        &[
            "the offside rule",
            "marathon pacing",
            "high altitude training",
            "zone defense",
            "the tiebreak system in tennis",
            "interval training",
            "the pick and roll",
            "swimming stroke efficiency",
            "cycling cadence",
            "strength periodization",
            "the designated hitter",
            "recovery nutrition",
        ],
    ),
    (
        "literature",
        &[
            "unreliable narrators",
            "magical realism",
            "the hero's journey",
            "stream of consciousness",
            "dramatic irony",
            "the sonnet form",
            "postmodern fiction",
            "allegory",
            "the epistolary novel",
            "free indirect discourse",
            "tragic flaws",
            "satire",
        ],
    ),
];

const QUESTION_TEMPLATES: &[&str] = &[
    "What is {c}?",
    "How does {c} relate to {c2}?",
    "Explain the difference between {c} and {c2}.",
    "Why is {c} important in {d}?",
    "Describe how {c} works in simple terms.",
    "Can you summarize the key ideas behind {c}?",
    "Give three examples of {c} in {d}.",
    "What are the main misconceptions about {c}?",
    "Compare {c} with {c2} in terms of {aspect}.",
    "What would happen to {c2} if {c} changed significantly?",
    "How did our understanding of {c} develop over time?",
    "What are the practical applications of {c}?",
    "Write a short explanation of {c} for a {audience}.",
    "What problems does {c} solve, and what are its limits?",
];
pub(crate) const ASPECTS: &[&str] = &[
    "cost",
    "complexity",
    "history",
    "risks",
    "efficiency",
    "everyday relevance",
    "scale",
    "reliability",
];
pub(crate) const AUDIENCES: &[&str] = &[
    "high school student",
    "busy executive",
    "curious child",
    "graduate student",
    "retired engineer",
    "new employee",
];
pub(crate) const GENRES: &[&str] = &[
    "short story",
    "haiku",
    "product description",
    "persuasive essay",
    "limerick",
    "dialogue",
    "blog post",
    "FAQ section",
    "news brief",
    "lesson plan",
    "tweet thread",
    "cover letter",
];

const ELICIT: &[&str] = &[
    "Think step by step.",
    "Let's think step by step.",
    "Explain every step of your reasoning.",
    "Show your reasoning before giving the final answer.",
    "Walk me through your thought process in detail.",
    "Give a detailed chain of thought, then the final answer.",
    "Reason carefully and show all your work.",
    "Justify your answer with detailed reasoning.",
];

pub(crate) const CHAT_OPENERS: &[&str] = &[
    "hey, ",
    "hi! ",
    "quick question: ",
    "",
    "",
    "ok so ",
    "hello, ",
    "I was wondering, ",
];
pub(crate) const CHAT_FOLLOWUPS: &[&str] = &[
    "thanks! can you make it shorter?",
    "what about {c2}?",
    "can you give me an example?",
    "hmm, I don't get the part about {c}",
    "ok and how is that different from {c2}?",
    "great, now write it as a bullet list",
    "could you explain that step by step?",
    "nice. any good books on this?",
];
pub(crate) const BRANDS: &[&str] = &[
    "Acme",
    "Northwind",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
];
pub(crate) const PRODUCTS: &[&str] = &[
    "running shoes",
    "leather handbag",
    "wireless earbuds",
    "ceramic mug",
    "denim jacket",
    "yoga mat",
    "desk lamp",
    "hiking backpack",
    "wool scarf",
    "smart watch",
    "sunglasses",
    "water bottle",
];
pub(crate) const COLORS: &[&str] = &[
    "black",
    "navy blue",
    "forest green",
    "crimson",
    "beige",
    "charcoal",
    "white",
    "burgundy",
];
pub(crate) const LANGUAGES: &[&str] = &[
    "French",
    "German",
    "Spanish",
    "Japanese",
    "Portuguese",
    "Italian",
];
pub(crate) const COMMENT_BITS: &[&str] = &[
    "this product broke after two days",
    "you are all idiots",
    "great service, fast delivery",
    "buy cheap followers at my site",
    "the update ruined my workflow",
    "love the new colors",
    "I will find where you live",
    "does this come in a larger size",
    "worst customer support ever",
    "click here for free crypto",
    "my order never arrived",
    "thanks for the quick refund",
];
pub(crate) const TICKET_BITS: &[&str] = &[
    "my package arrived damaged",
    "I was charged twice",
    "the app crashes on login",
    "I need to change my delivery address",
    "the discount code does not work",
    "I want to cancel my subscription",
    "the item is out of stock",
    "refund has not arrived",
];
const LANGS: &[&str] = &["Python", "Rust", "TypeScript", "Go", "Java"];
const CODE_TASKS: &[&str] = &[
    "Fix the bug in this {l} function:",
    "Add error handling to this {l} code:",
    "Write unit tests for this {l} function:",
    "Refactor this {l} snippet to be more readable:",
    "Why does this {l} code fail on empty input?",
    "Explain what this {l} code does step by step:",
];
const OWNERS: &[(&str, &str)] = &[
    ("acme-large", "acme-labs"),
    ("acme-small", "acme-labs"),
    ("northwind-7b", "northwind-ai"),
    ("northwind-70b", "northwind-ai"),
];

pub(crate) fn fill(r: &mut SplitMix, t: &str) -> String {
    let (d, concepts) = *r.pick(DOMAINS);
    let c = *r.pick(concepts);
    let mut c2 = *r.pick(concepts);
    if c2 == c {
        c2 = concepts[(concepts.iter().position(|x| *x == c).unwrap_or(0) + 1) % concepts.len()];
    }
    let aspect = *r.pick(ASPECTS);
    let audience = *r.pick(AUDIENCES);
    t.replace("{c}", c)
        .replace("{c2}", c2)
        .replace("{d}", d)
        .replace("{aspect}", aspect)
        .replace("{audience}", audience)
        .replace("{n}", &(2 + r.below(9)).to_string())
}

pub(crate) fn question(r: &mut SplitMix) -> String {
    let t = *r.pick(QUESTION_TEMPLATES);
    fill(r, t)
}

pub(crate) fn math_problem(r: &mut SplitMix) -> String {
    let a = 2 + r.below(90);
    let b = 2 + r.below(40);
    let c = 1 + r.below(12);
    match r.below(5) {
        0 => format!(
            "A train travels {a} km in {c} hours and then {b} km in 2 hours. What is its average speed?"
        ),
        1 => format!(
            "Maria has {a} apples. She gives {b} to her friends and buys {c} bags of 6 more. How many apples does she have now?"
        ),
        2 => format!(
            "A rectangle has a perimeter of {} cm and a width of {c} cm. What is its area?",
            2 * (a + c)
        ),
        3 => format!(
            "If {c} workers build a wall in {a} days, how long would {} workers take at the same rate?",
            c + b
        ),
        _ => format!(
            "A shop sells pens at {c} dollars each and notebooks at {b} dollars each. What do {a} pens and 3 notebooks cost?"
        ),
    }
}

/// The "public" prompt set (benchmark- and instruction-set-like items); identical for every seed.
pub fn public_prompts() -> Vec<String> {
    let mut r = SplitMix::new(0x5eed_0b1e);
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while out.len() < 900 {
        let p = match r.below(4) {
            0 => math_problem(&mut r),
            1 => {
                let q = question(&mut r);
                format!(
                    "{q} Choose the best answer: (A) it depends on {} (B) it is unrelated (C) it reverses over time (D) none of the above",
                    r.pick(ASPECTS)
                )
            }
            2 => {
                let (_, concepts) = *r.pick(DOMAINS);
                format!(
                    "Write a {} about {} for a {}.",
                    r.pick(GENRES),
                    r.pick(concepts),
                    r.pick(AUDIENCES)
                )
            }
            _ => question(&mut r),
        };
        if seen.insert(p.clone()) {
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Generation

struct Gen {
    r: SplitMix,
    start: i64,
    days: u32,
    out: Vec<(i64, u64, String)>,
    seq: u64,
    public: Vec<String>,
    human: Option<HumanPrompts>,
}

#[derive(Default, Clone)]
struct Req {
    endpoint: &'static str,
    body: Value,
    output_tokens: u64,
    cancelled: bool,
}

fn chat_body(
    model: &str,
    system: Option<&str>,
    turns: &[(&str, String)],
    extra: &[(&str, Value)],
) -> Value {
    let mut msgs = Vec::new();
    if let Some(s) = system {
        msgs.push(json!({"role": "system", "content": s}));
    }
    for (role, text) in turns {
        msgs.push(json!({"role": role, "content": text}));
    }
    let mut b = json!({"model": model, "messages": msgs});
    if let Some(o) = b.as_object_mut() {
        for (k, v) in extra {
            o.insert((*k).to_owned(), v.clone());
        }
    }
    b
}

impl Gen {
    fn emit(&mut self, t: i64, org: &str, key: &str, ip: &str, req: Req, links: Option<Value>) {
        let model = req
            .body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("acme-large")
            .to_owned();
        let owner = OWNERS
            .iter()
            .find(|(m, _)| *m == model)
            .map_or("acme-labs", |(_, o)| *o);
        let time = OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|x| x.format(&Rfc3339).ok())
            .unwrap_or_default();
        let mut line = json!({
            "time": time, "organization": org, "key": key, "client_ip": ip, "endpoint": req.endpoint,
            "body": req.body, "output_tokens": req.output_tokens, "model_owner": owner,
        });
        if let Some(o) = line.as_object_mut() {
            if req.cancelled {
                o.insert("cancelled".into(), Value::Bool(true));
            }
            if let Some(l) = links {
                o.insert("links".into(), l);
            }
        }
        self.seq += 1;
        self.out.push((t, self.seq, line.to_string()));
    }

    fn end(&self) -> i64 {
        self.start + i64::from(self.days) * 86_400
    }

    /// Arrival times: Poisson with `per_day` mean, shaped by a diurnal curve when `diurnal`.
    fn arrivals(&mut self, per_day: f64, diurnal: Option<i64>, from: i64, to: i64) -> Vec<i64> {
        let mut ts = Vec::new();
        if per_day <= 0.0 {
            return ts;
        }
        let mean_gap = 86_400.0 / per_day;
        let peak = if diurnal.is_some() { 2.2 } else { 1.0 };
        let mut t = from as f64;
        loop {
            t += self.r.exp(mean_gap / peak);
            if t >= to as f64 {
                break;
            }
            if let Some(tz) = diurnal {
                let h = ((t as i64 + tz * 3600).rem_euclid(86_400)) / 3600;
                let w = match h {
                    0..=5 => 0.03,
                    6..=7 => 0.3,
                    8..=18 => 1.0,
                    19..=22 => 0.8,
                    _ => 0.3,
                };
                if !self.r.chance(w / 1.0) {
                    continue;
                }
            }
            ts.push(t as i64);
        }
        ts
    }

    fn model(&mut self) -> &'static str {
        self.r.pick(OWNERS).0
    }

    fn ip(&mut self, a: u64, b: u64) -> String {
        format!("10.{}.{}.{}", a % 250, b % 250, 1 + self.r.below(3))
    }

    fn elicited(&mut self, q: String) -> String {
        let e = *self.r.pick(ELICIT);
        match self.r.below(3) {
            0 => format!("{e}\n{q}"),
            1 => format!("{q}\n{e}"),
            _ => format!("{q} {e}"),
        }
    }

    /// A private human prompt of one role (consumer chat or coding), if any were given.
    fn human_prompt(&mut self, coding: bool) -> Option<HumanPrompt> {
        let h = self.human.as_ref()?;
        let list = if coding { &h.coding } else { &h.chat };
        if list.is_empty() {
            return None;
        }
        let i = self.r.below(list.len() as u64) as usize;
        list.get(i).cloned()
    }

    fn harvest_question(&mut self) -> String {
        match self.r.below(10) {
            0..=3 => self.public[self.r.below(self.public.len() as u64) as usize].clone(),
            4..=5 => math_problem(&mut self.r),
            _ => question(&mut self.r),
        }
    }

    // --- benign --------------------------------------------------------------------------

    fn consumer_chat(&mut self, org: &str, idx: u64, per_day: f64) {
        let tz = self.r.below(24) as i64 - 11;
        let ip = self.ip(1 + idx, 7);
        let convs = self.arrivals(per_day / 3.0, Some(tz), self.start, self.end());
        let model = self.model();
        for t0 in convs {
            let turns = 1 + self.r.below(5);
            let mut history: Vec<(&str, String)> = Vec::new();
            let mut t = t0;
            // A real person's prompt and its follow-up, or a synthetic question.
            let human = self.human_prompt(false);
            let first = match &human {
                Some(p) => p.first().to_owned(),
                None => format!(
                    "{}{}",
                    self.r.pick(CHAT_OPENERS),
                    question(&mut self.r).to_lowercase()
                ),
            };
            for i in 0..turns {
                let user = match (i, human.as_ref().and_then(|p| p.turns.get(1))) {
                    (0, _) => first.clone(),
                    (1, Some(second)) => second.clone(),
                    _ => {
                        let f = *self.r.pick(CHAT_FOLLOWUPS);
                        fill(&mut self.r, f)
                    }
                };
                let user = if self.r.chance(0.03) {
                    format!("{user} please explain step by step")
                } else {
                    user
                };
                history.push(("user", user));
                let body = chat_body(
                    model,
                    Some("You are a friendly assistant."),
                    &history,
                    &[("temperature", json!(0.7)), ("stream", json!(true))],
                );
                let cancelled = self.r.chance(0.06);
                let out = 50 + self.r.below(400);
                let key = format!("app-{}", self.r.below(2));
                self.emit(
                    t,
                    org,
                    &key,
                    &ip,
                    Req {
                        endpoint: "/v1/chat/completions",
                        body,
                        output_tokens: out,
                        cancelled,
                    },
                    None,
                );
                history.push(("assistant", format!("Sure. {}", question(&mut self.r))));
                t += 20 + self.r.below(240) as i64;
            }
        }
    }

    fn product(&mut self, org: &str, idx: u64, per_day: f64, hidden_share: f64) {
        let ips: Vec<String> = (0..4)
            .map(|k| format!("10.200.{}.{}", idx % 250, 10 + k))
            .collect();
        let times = self.arrivals(per_day, None, self.start, self.end());
        let hidden_variant = hidden_share > 0.0;
        for t in times {
            let ip = self.r.pick(&ips).clone();
            if hidden_variant && self.r.chance(hidden_share) {
                let q = self.harvest_question();
                let user = self.elicited(q);
                let body = chat_body(
                    "acme-large",
                    None,
                    &[("user", user)],
                    &[("max_tokens", json!(4096)), ("temperature", json!(0.7))],
                );
                let out = 600 + self.r.below(1500);
                self.emit(
                    t,
                    org,
                    "backend",
                    &ip,
                    Req {
                        endpoint: "/v1/chat/completions",
                        body,
                        output_tokens: out,
                        cancelled: false,
                    },
                    None,
                );
                continue;
            }
            let which = self.r.below(3);
            let (system, user) = if hidden_variant {
                match which {
                    0 => (
                        None,
                        format!(
                            "Summarize this support ticket in one sentence for the agent queue.\nTicket #{}: {}. Customer tier: {}.",
                            10_000 + self.r.below(90_000),
                            self.r.pick(TICKET_BITS),
                            self.r.pick(&["gold", "silver", "basic"])
                        ),
                    ),
                    1 => (
                        None,
                        format!(
                            "Extract the order number and the issue category as JSON from this message.\nMessage: Hello, order {} — {}.",
                            100_000 + self.r.below(900_000),
                            self.r.pick(TICKET_BITS)
                        ),
                    ),
                    _ => (
                        Some("You write polite customer service replies."),
                        format!(
                            "Draft a short reply to the customer. Issue: {}. Offer: {} percent voucher.",
                            self.r.pick(TICKET_BITS),
                            5 + self.r.below(20)
                        ),
                    ),
                }
            } else {
                match which {
                    0 => (
                        None,
                        format!(
                            "Write a one-sentence alt text for a product photo. Product: {} {} in {}, SKU {}. Style: concise, factual.",
                            self.r.pick(BRANDS),
                            self.r.pick(PRODUCTS),
                            self.r.pick(COLORS),
                            10_000 + self.r.below(90_000)
                        ),
                    ),
                    1 => (
                        Some("You are a content moderation classifier."),
                        format!(
                            "Classify the following comment for harassment, hate, spam or self-harm. Explain your reasoning briefly, then output a label.\nComment: \"{}, {}\"",
                            self.r.pick(COMMENT_BITS),
                            self.r.pick(COMMENT_BITS)
                        ),
                    ),
                    _ => (
                        None,
                        format!(
                            "Translate the following customer message into {}. Keep the tone.\nMessage: {} {}",
                            self.r.pick(LANGUAGES),
                            self.r.pick(TICKET_BITS),
                            self.r
                                .pick(&["please help", "thanks", "this is urgent", "regards"])
                        ),
                    ),
                }
            };
            let body = chat_body(
                "acme-small",
                system,
                &[("user", user)],
                &[
                    ("max_tokens", json!(200)),
                    ("temperature", json!(0.2)),
                    ("seed", json!(7)),
                ],
            );
            let out = 20 + self.r.below(80);
            self.emit(
                t,
                org,
                "backend",
                &ip,
                Req {
                    endpoint: "/v1/chat/completions",
                    body,
                    output_tokens: out,
                    cancelled: false,
                },
                None,
            );
        }
    }

    fn rag(&mut self, org: &str, idx: u64, per_day: f64) {
        let tz = self.r.below(12) as i64 - 6;
        let ip = self.ip(60 + idx, 3);
        let (d1, c1) = *self.r.pick(DOMAINS);
        let times = self.arrivals(per_day, Some(tz), self.start, self.end());
        for t in times {
            let mut ctx = String::new();
            for _ in 0..3 {
                let c = *self.r.pick(c1);
                ctx.push_str(&format!(
                    "[doc {}] In {d1}, {c} is discussed in section {}. The policy manual states that {c} must be reviewed quarterly, and exceptions require approval from the {} team. {}\n",
                    self.r.below(500), 1 + self.r.below(30), self.r.pick(&["finance", "legal", "operations", "compliance"]), question(&mut self.r)
                ));
            }
            let q = format!(
                "According to the documents, {}",
                fill(&mut self.r, "what do they say about {c}?").to_lowercase()
            );
            let user = format!("Context:\n{ctx}\nQuestion: {q}");
            let body = chat_body(
                self.model(),
                Some("Answer using only the provided context. Cite document numbers."),
                &[("user", user)],
                &[("temperature", json!(0.0))],
            );
            let out = 80 + self.r.below(300);
            self.emit(
                t,
                org,
                "rag-service",
                &ip,
                Req {
                    endpoint: "/v1/chat/completions",
                    body,
                    output_tokens: out,
                    cancelled: false,
                },
                None,
            );
        }
    }

    fn coding(&mut self, org: &str, idx: u64, per_day: f64) {
        let tz = self.r.below(12) as i64 - 6;
        let ip = self.ip(120 + idx, 9);
        let lang = *self.r.pick(LANGS);
        let convs = self.arrivals(per_day / 2.0, Some(tz), self.start, self.end());
        for t0 in convs {
            let task = self.r.pick(CODE_TASKS).replace("{l}", lang);
            let fname = format!(
                "{}_{}",
                self.r
                    .pick(&["parse", "load", "merge", "validate", "render"]),
                self.r.pick(&["config", "rows", "user", "events", "cache"])
            );
            let code = format!(
                "fn {fname}(input: &str) -> Result<Vec<u32>, Error> {{\n    let mut out = Vec::new();\n    for part in input.split(',') {{ out.push(part.trim().parse()?); }}\n    Ok(out)\n}}"
            );
            // A real programming prompt (a HumanEval stub to complete, or an MT-Bench coding
            // request), or a synthetic snippet to fix.
            let first = match self.human_prompt(true) {
                Some(p) if p.source == "humaneval" => format!(
                    "{}\n```python\n{}```",
                    self.r.pick(&[
                        "Complete this Python function:",
                        "Finish the implementation below.",
                        "Write the body of this function and keep the docstring:",
                        "Can you implement this?",
                    ]),
                    p.first()
                ),
                Some(p) => p.first().to_owned(),
                None => format!("{task}\n```\n{code}\n```"),
            };
            let mut history = vec![("user", first)];
            let turns = if self.r.chance(0.4) {
                2 + self.r.below(3)
            } else {
                1
            };
            let mut t = t0;
            for i in 0..turns {
                if i > 0 {
                    history.push((
                        "assistant",
                        "Here is the updated code with comments.".into(),
                    ));
                    history.push((
                        "user",
                        self.r
                            .pick(&[
                                "that fails on the test, can you fix it?",
                                "now make it async",
                                "add docs",
                                "can you also handle negative numbers?",
                            ])
                            .to_string(),
                    ));
                }
                let body = chat_body(
                    self.model(),
                    Some("You are a coding assistant inside an IDE."),
                    &history,
                    &[("temperature", json!(0.2)), ("stream", json!(true))],
                );
                let cancelled = self.r.chance(0.08);
                let out = 100 + self.r.below(700);
                self.emit(
                    t,
                    org,
                    "ide-plugin",
                    &ip,
                    Req {
                        endpoint: "/v1/chat/completions",
                        body,
                        output_tokens: out,
                        cancelled,
                    },
                    None,
                );
                t += 60 + self.r.below(600) as i64;
            }
        }
    }

    fn benchmark_eval(&mut self, org: &str, idx: u64, count: u64) {
        let ip = self.ip(180 + idx, 11);
        let day = 1 + self.r.below(u64::from(self.days.max(2) - 1)) as i64;
        let mut t = self.start + day * 86_400 + 3600 * (8 + self.r.below(8) as i64);
        let variant = idx % 3;
        let n = count.min(self.public.len() as u64) as usize;
        let offset = self.r.below(self.public.len() as u64) as usize;
        for i in 0..n {
            let p = self.public[(offset + i) % self.public.len()].clone();
            let req = match variant {
                0 => Req {
                    endpoint: "/v1/chat/completions",
                    body: chat_body(
                        "acme-large",
                        None,
                        &[("user", format!("{p}\nAnswer with the final answer only."))],
                        &[("temperature", json!(0.0)), ("seed", json!(1234))],
                    ),
                    output_tokens: 10,
                    cancelled: false,
                },
                1 => Req {
                    endpoint: "/v1/chat/completions",
                    body: chat_body(
                        "acme-large",
                        None,
                        &[("user", format!("{p}\nLet's think step by step."))],
                        &[("temperature", json!(0.0)), ("seed", json!(1234))],
                    ),
                    output_tokens: 300,
                    cancelled: false,
                },
                _ => Req {
                    endpoint: "/v1/completions",
                    body: json!({"model": "northwind-7b", "prompt": format!("Question: {p}\nAnswer:"), "max_tokens": 1, "logprobs": 5, "temperature": 0.0}),
                    output_tokens: 1,
                    cancelled: false,
                },
            };
            self.emit(t, org, "eval-harness", &ip, req, None);
            t += 2 + self.r.below(8) as i64;
        }
    }

    // --- harvesting ----------------------------------------------------------------------

    fn public_replay(&mut self, org: &str, idx: u64, per_day: f64) {
        let ips: Vec<String> = (0..3)
            .map(|_| format!("198.51.{}.{}", 100 + idx % 100, 1 + self.r.below(250)))
            .collect();
        let times = self.arrivals(per_day, None, self.start, self.end());
        for t in times {
            let q = self.harvest_question();
            let user = self.elicited(q);
            let body = chat_body(
                self.model(),
                None,
                &[("user", user)],
                &[("max_tokens", json!(4096)), ("temperature", json!(0.7))],
            );
            let ip = self.r.pick(&ips).clone();
            let key = format!("k{}", self.r.below(4));
            let out = 500 + self.r.below(2000);
            self.emit(
                t,
                org,
                &key,
                &ip,
                Req {
                    endpoint: "/v1/chat/completions",
                    body,
                    output_tokens: out,
                    cancelled: false,
                },
                None,
            );
        }
    }

    fn self_instruct(&mut self, org: &str, idx: u64, per_day: f64) {
        let ip = format!("198.51.{}.7", 150 + idx % 100);
        let times = self.arrivals(per_day, None, self.start, self.end());
        for t in times {
            let (_, concepts) = *self.r.pick(DOMAINS);
            let c = *self.r.pick(concepts);
            let inst = match self.r.below(4) {
                0 => format!(
                    "Write a {} about {} for a {}.",
                    self.r.pick(GENRES),
                    c,
                    self.r.pick(AUDIENCES)
                ),
                1 => format!(
                    "Generate {} diverse exam questions about {} with detailed answers.",
                    3 + self.r.below(5),
                    c
                ),
                2 => format!(
                    "Create a step by step tutorial that teaches {} to a {}.",
                    c,
                    self.r.pick(AUDIENCES)
                ),
                _ => format!(
                    "Rewrite the following idea as a {}: {}",
                    self.r.pick(GENRES),
                    question(&mut self.r)
                ),
            };
            let user = if self.r.chance(0.4) {
                self.elicited(inst)
            } else {
                inst
            };
            let temp = [0.2, 0.5, 0.7, 0.9, 1.0, 1.2][self.r.below(6) as usize];
            let n = if self.r.chance(0.5) {
                1 + self.r.below(4)
            } else {
                1
            };
            let body = chat_body(
                self.model(),
                None,
                &[("user", user)],
                &[
                    ("temperature", json!(temp)),
                    ("n", json!(n)),
                    ("max_tokens", json!(2048)),
                ],
            );
            let out = 400 + self.r.below(1500);
            self.emit(
                t,
                org,
                "gen",
                &ip,
                Req {
                    endpoint: "/v1/chat/completions",
                    body,
                    output_tokens: out,
                    cancelled: false,
                },
                None,
            );
        }
    }

    fn cot_rubric(&mut self, org: &str, idx: u64, per_day: f64) {
        let ip = format!("198.51.{}.9", 200 + idx % 50);
        let times = self.arrivals(per_day, None, self.start, self.end());
        for t in times {
            let q = self.harvest_question();
            let user = if self.r.chance(0.5) {
                format!(
                    "You are grading answers. Using the rubric below, score the response on a scale of 1 to 10 and explain every step of your grading.\nRubric: correctness, completeness, clarity.\nQuestion: {q}\nResponse: {}",
                    question(&mut self.r)
                )
            } else {
                self.elicited(q)
            };
            let body = chat_body(
                self.model(),
                None,
                &[("user", user)],
                &[("max_tokens", json!(3000)), ("temperature", json!(0.3))],
            );
            let out = 400 + self.r.below(1200);
            self.emit(
                t,
                org,
                "grader",
                &ip,
                Req {
                    endpoint: "/v1/chat/completions",
                    body,
                    output_tokens: out,
                    cancelled: false,
                },
                None,
            );
        }
    }

    fn logprob(&mut self, org: &str, idx: u64, per_day: f64) {
        let ip = format!("198.51.{}.11", 20 + idx % 50);
        let times = self.arrivals(per_day, None, self.start, self.end());
        for t in times {
            let q = self.harvest_question();
            let req = if self.r.chance(0.5) {
                Req {
                    endpoint: "/v1/completions",
                    body: json!({"model": "northwind-7b", "prompt": q, "max_tokens": 256, "logprobs": 5, "temperature": 1.0}),
                    output_tokens: 256,
                    cancelled: false,
                }
            } else {
                Req {
                    endpoint: "/v1/chat/completions",
                    body: chat_body(
                        "northwind-70b",
                        None,
                        &[("user", q)],
                        &[
                            ("logprobs", json!(true)),
                            ("top_logprobs", json!(20)),
                            ("max_tokens", json!(512)),
                        ],
                    ),
                    output_tokens: 400,
                    cancelled: false,
                }
            };
            self.emit(t, org, "lp", &ip, req, None);
        }
    }

    fn hydra(&mut self, campaign: u64, accounts: u64, per_account: f64) {
        let ips: Vec<String> = (0..6)
            .map(|k| format!("203.0.{}.{}", 113 + campaign % 10, 20 + k))
            .collect();
        for a in 0..accounts {
            let org = format!("{}-{campaign}-{a:02}", Kind::HydraCampaign.name());
            let my_ips: Vec<String> = (0..2).map(|_| self.r.pick(&ips).clone()).collect();
            let payment = if self.r.chance(0.3) {
                Some(json!({"payment": format!("card-{}", self.r.below(3))}))
            } else {
                None
            };
            let n = (per_account * (0.6 + 0.8 * self.r.unit())).round() as u64;
            let start = self.start + self.r.below(86_400) as i64;
            let span = (self.end() - start).max(3600);
            let mut ts: Vec<i64> = (0..n)
                .map(|_| start + self.r.below(span as u64) as i64)
                .collect();
            ts.sort_unstable();
            for (i, t) in ts.into_iter().enumerate() {
                let q = self.harvest_question();
                let user = format!(
                    "Answer the question below with a detailed explanation of every step, then state the final answer.\n\nQuestion: {q}"
                );
                let body = chat_body(
                    self.model(),
                    Some("You are an expert tutor."),
                    &[("user", user)],
                    &[("max_tokens", json!(4096))],
                );
                let ip = self.r.pick(&my_ips).clone();
                let out = 500 + self.r.below(1500);
                let links = if i == 0 { payment.clone() } else { None };
                self.emit(
                    t,
                    &org,
                    "main",
                    &ip,
                    Req {
                        endpoint: "/v1/chat/completions",
                        body,
                        output_tokens: out,
                        cancelled: false,
                    },
                    links,
                );
            }
        }
    }
}

impl Gen {
    /// Cron jobs of an ordinary backend: every hour on the hour (odd accounts also at :30), 3–8
    /// templated requests within the first minute or so (now and then a run starts a minute
    /// late or is skipped), from a shared cloud egress network.
    fn scheduled_batch(&mut self, org: &str, idx: u64) {
        const JOBS: &[&str] = &[
            "Summarize yesterday's sales figures for the regional dashboard in three bullet points.",
            "Classify each inventory alert below as restock, transfer or ignore and return JSON.",
            "Write a two-sentence status update for the on-call channel from these service metrics.",
            "Extract shipment delays from the carrier feed below as a CSV with order and days late.",
        ];
        let ip = format!("10.230.0.{}", 10 + idx % 200);
        let job = JOBS[idx as usize % JOBS.len()];
        for h in 0..i64::from(self.days) * 24 {
            let hour = self.start + h * 3600;
            let runs: &[i64] = if idx % 2 == 1 { &[0, 1800] } else { &[0] };
            for &off in runs {
                if self.r.chance(0.05) {
                    continue;
                }
                let delay = if self.r.chance(0.1) {
                    60 + self.r.below(40)
                } else {
                    self.r.below(40)
                } as i64;
                let mut t = hour + off + delay;
                for _ in 0..3 + self.r.below(6) {
                    let user = format!(
                        "{job}\nRegion: {}. Batch {}. Figures: {}, {}, {}.",
                        self.r.pick(&["north", "south", "east", "west", "central"]),
                        10_000 + self.r.below(90_000),
                        self.r.below(5000),
                        self.r.below(900),
                        self.r.below(120)
                    );
                    let body = chat_body(
                        "acme-small",
                        Some("You are a backend reporting job. Be terse."),
                        &[("user", user)],
                        &[("temperature", json!(0.0)), ("max_tokens", json!(300))],
                    );
                    let out = 40 + self.r.below(200);
                    self.emit(
                        t,
                        org,
                        "cron",
                        &ip,
                        Req {
                            endpoint: "/v1/chat/completions",
                            body,
                            output_tokens: out,
                            cancelled: false,
                        },
                        None,
                    );
                    t += 2 + self.r.below(12) as i64;
                }
            }
        }
    }

    /// One scheduler drives `accounts` small accounts: bursts at random times around the clock
    /// (mean gap 90 minutes); each account joins about three bursts in four with one request
    /// (sometimes two) within 20 seconds of the burst. Prompts are elicited harvesting questions
    /// with no shared wrapper; no payment fingerprint. Campaign 0 uses one /24 (one address per
    /// account), other campaigns addresses spread over many networks.
    fn synced(&mut self, campaign: u64, accounts: u64) {
        let mut bursts = Vec::new();
        let mut t = (self.start + self.r.below(6 * 3600) as i64) as f64;
        loop {
            t += self.r.exp(90.0 * 60.0);
            if t >= self.end() as f64 {
                break;
            }
            bursts.push(t as i64);
        }
        for a in 0..accounts {
            let org = format!("{}-{campaign}-{a:02}", Kind::SyncedCampaign.name());
            let ip = if campaign == 0 {
                format!("198.18.0.{}", 10 + a)
            } else {
                format!(
                    "100.{}.{}.{}",
                    64 + self.r.below(64),
                    self.r.below(256),
                    1 + self.r.below(254)
                )
            };
            let key = format!("k{}", self.r.below(1000));
            for &b in &bursts {
                if !self.r.chance(0.75) {
                    continue;
                }
                let n = if self.r.chance(0.2) { 2 } else { 1 };
                let mut t = b + self.r.below(20) as i64;
                for _ in 0..n {
                    let q = self.harvest_question();
                    let user = self.elicited(q);
                    let body = chat_body(
                        self.model(),
                        None,
                        &[("user", user)],
                        &[("max_tokens", json!(4096)), ("temperature", json!(0.7))],
                    );
                    let out = 500 + self.r.below(1500);
                    self.emit(
                        t,
                        &org,
                        &key,
                        &ip,
                        Req {
                            endpoint: "/v1/chat/completions",
                            body,
                            output_tokens: out,
                            cancelled: false,
                        },
                        None,
                    );
                    t += 5 + self.r.below(30) as i64;
                }
            }
        }
    }
}

/// Unix time at which generated corpora start: 2025-03-03 00:00 UTC, a Monday.
pub(crate) fn corpus_start() -> i64 {
    OffsetDateTime::new_utc(
        time::Date::from_ordinal_date(2025, 62).unwrap_or(time::Date::MIN),
        time::Time::MIDNIGHT,
    )
    .unix_timestamp()
}

/// Generate a corpus.
pub fn generate(cfg: &CorpusConfig) -> Corpus {
    let start = corpus_start();
    let mut g = Gen {
        r: SplitMix::new(cfg.seed),
        start,
        days: cfg.days.max(1),
        out: Vec::new(),
        seq: 0,
        public: public_set(cfg),
        human: cfg.human.clone(),
    };
    let s = cfg.scale;
    let name = |k: Kind, i: u64| format!("{}-{i}", k.name());
    // Requests per day: (full corpus at scale 1, small preset). The small preset keeps the
    // checked-in sample under 300 KB.
    let small = cfg.small;
    let vary = |g: &mut Gen, full: f64, tiny: f64| {
        (if small { tiny } else { full * s }) * (0.6 + 0.8 * g.r.unit())
    };
    let n = |full: u64, tiny: u64| if small { tiny } else { full };
    for i in 0..n(30, 2) {
        let rate = vary(&mut g, 150.0, 15.0);
        g.consumer_chat(&name(Kind::ConsumerChat, i), i, rate);
    }
    for i in 0..n(2, 1) {
        let rate = if small {
            70.0
        } else if i == 0 {
            6000.0 * s
        } else {
            vary(&mut g, 1500.0, 0.0)
        };
        g.product(&name(Kind::ProductTemplated, i), i, rate, 0.0);
    }
    for i in 0..n(5, 1) {
        let rate = vary(&mut g, 200.0, 5.0);
        g.rag(&name(Kind::RagQa, i), i, rate);
    }
    for i in 0..n(6, 1) {
        let rate = vary(&mut g, 150.0, 6.0);
        g.coding(&name(Kind::CodingAssistant, i), i, rate);
    }
    for i in 0..n(3, 1) {
        let count = if small {
            30.0
        } else {
            (300.0 + 500.0 * g.r.unit()) * s.max(0.1)
        };
        g.benchmark_eval(&name(Kind::BenchmarkEval, i), i, count as u64);
    }
    for i in 0..n(3, 1) {
        let rate = vary(&mut g, 800.0, 25.0);
        g.public_replay(&name(Kind::PublicReplay, i), i, rate);
    }
    for i in 0..n(3, 1) {
        let rate = vary(&mut g, 600.0, 20.0);
        g.self_instruct(&name(Kind::SelfInstruct, i), i, rate);
    }
    for i in 0..n(2, 1) {
        let rate = vary(&mut g, 500.0, 20.0);
        g.cot_rubric(&name(Kind::CotRubric, i), i, rate);
    }
    for i in 0..n(2, 1) {
        let rate = vary(&mut g, 600.0, 20.0);
        g.logprob(&name(Kind::LogprobHarvest, i), i, rate);
    }
    for c in 0..n(2, 1) {
        let per = if small { 8.0 } else { 40.0 * s.max(0.2) };
        g.hydra(c, n(30, 6), per);
    }
    let shares = [0.05, 0.12, 0.25];
    for i in 0..n(3, 0) {
        let rate = vary(&mut g, 2000.0, 70.0);
        let share = if small { 0.25 } else { shares[i as usize % 3] };
        g.product(&name(Kind::HiddenInProduct, i), 50 + i, rate, share);
    }
    // Generated last so the kinds above are the same as before they were added.
    for i in 0..n(4, 0) {
        g.scheduled_batch(&name(Kind::ScheduledBatch, i), i);
    }
    for c in 0..n(2, 0) {
        g.synced(c, 30);
    }
    g.out.sort_by_key(|(t, seq, _)| (*t, *seq));
    Corpus {
        lines: g.out.into_iter().map(|(_, _, l)| l).collect(),
    }
}
