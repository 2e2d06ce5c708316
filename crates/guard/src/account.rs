//! Per-account state: fixed-size counters and sketches updated on the request path, plus the
//! bounded evidence (hourly timeline, per-owner extent, templates, keys and — for flagged accounts
//! only — a pruned prompt sample). See [`memory_bound`] for the size bound.

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::features::{NO_TOPIC, RequestFeatures, TOPICS};
use crate::score::{Contrast, SignalValues, entropy};
use crate::segment::{SegRequest, Segment, Segments};
use crate::sketch::{Hll, hamming};

/// Wrapper shingles tracked per account (space-saving heavy hitters).
pub const MAX_WRAPPERS: usize = 8;
/// A wrapper shingle is registered for cross-account links once it carries this share of the
/// account's requests (and at least 5 of them).
pub const WRAPPER_SHARE: f64 = 0.2;

/// Space-saving heavy hitters: the slot of the entry `matches` finds, else of a new entry while
/// fewer than `cap` are kept, else of the least-counted entry, replaced by `fresh(its count)`
/// (a new entry is `fresh(0)`). Returns the slot and whether an entry was replaced; `None` only
/// when `cap` is 0.
fn space_saving<T>(
    table: &mut Vec<T>,
    cap: usize,
    matches: impl Fn(&T) -> bool,
    count: impl Fn(&T) -> u32,
    fresh: impl FnOnce(u32) -> T,
) -> Option<(usize, bool)> {
    if let Some(i) = table.iter().position(matches) {
        return Some((i, false));
    }
    if table.len() < cap {
        table.push(fresh(0));
        return Some((table.len() - 1, false));
    }
    let (i, min) = table
        .iter()
        .enumerate()
        .min_by_key(|(_, t)| count(t))
        .map(|(i, t)| (i, count(t)))?;
    table[i] = fresh(min);
    Some((i, true))
}

/// Count one request of `topic` (none: [`NO_TOPIC`]) in a byte histogram, halving every bin
/// before one would overflow.
fn count_topic(topics: &mut [u8], topic: u8) {
    if topic == NO_TOPIC {
        return;
    }
    let k = usize::from(topic) % TOPICS;
    if topics.get(k) == Some(&u8::MAX) {
        topics.iter_mut().for_each(|v| *v /= 2);
    }
    if let Some(x) = topics.get_mut(k) {
        *x = x.saturating_add(1);
    }
}

/// A prompt wrapper (the first or last words shared by many of an account's prompts).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WrapperStat {
    pub hash: u64,
    pub count: u32,
    pub registered: bool,
    /// The head (true) or tail shingle.
    pub head: bool,
}

/// Dimensions of the distribution test's request profile ([`Account::profile`]).
pub const PROFILE_DIMS: usize = 16;
/// The profile is a running mean over the first requests, then an exponential moving average
/// over about this many.
pub const PROFILE_WINDOW: u64 = 256;

/// HyperLogLog precision for distinct prompts (1 KiB of registers, ±3.25% standard error).
pub const HLL_PRECISION: u8 = 10;
/// Templates tracked per account (space-saving heavy hitters).
pub const MAX_TEMPLATES: usize = 32;
/// Stored skeleton text per template, in bytes.
pub const MAX_SKELETON_BYTES: usize = 160;
/// Hourly timeline buckets kept (7 days).
pub const TIMELINE_HOURS: usize = 168;
/// Model owners tracked per account; further owners are folded into "other".
pub const MAX_OWNERS: usize = 16;
/// Daily extent buckets per owner.
pub const OWNER_DAYS: usize = 30;
/// Keys tracked per account; further keys are folded into "other".
pub const MAX_KEYS: usize = 64;
/// Bytes of key or owner name stored.
pub const MAX_NAME_BYTES: usize = 64;
/// Recent distinct client IPs remembered per account (coordination).
pub const MAX_IPS: usize = 16;
/// Link keys remembered per account (for evidence).
pub const MAX_LINK_KEYS: usize = 48;
/// Bytes of prompt text kept per sampled prompt (flagged accounts only).
pub const MAX_SAMPLE_BYTES: usize = 1024;
/// Hamming radius under which two template SimHashes are the same template.
pub const TEMPLATE_RADIUS: u32 = 4;
/// A template "explains" traffic once it has this many requests …
pub const HEAVY_TEMPLATE_MIN: u32 = 20;
/// … and at least this share of the account's requests.
pub const HEAVY_TEMPLATE_SHARE: f64 = 0.02;

/// Of two explanations (explained requests, explained harvesting requests), the one that
/// leaves the smaller share of unexplained traffic carrying harvesting requests. The pair is
/// kept together: mixing the request count of one with the harvesting count of the other
/// would describe no set of requests.
fn better_explanation(a: (u64, u64), b: (u64, u64), requests: u64, harvest: u64) -> (u64, u64) {
    let rate = |(ex, exh): (u64, u64)| {
        harvest.saturating_sub(exh) as f64 / (requests.saturating_sub(ex) as f64 + 10.0)
    };
    if rate(b) < rate(a) { b } else { a }
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

/// Summable counters (account or cluster aggregate).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub reasoning: u64,
    pub rubric: u64,
    pub reveal: u64,
    pub elicit: u64,
    pub out_dist: u64,
    pub max_high: u64,
    pub same_seed: u64,
    pub single_turn: u64,
    pub bench: u64,
    pub harvest: u64,
    pub completions: u64,
    pub cancelled: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub harvest_tokens: u64,
    pub explained: u64,
    pub explained_harvest: u64,
    pub topics: [u32; TOPICS],
    pub harvest_topics: [u32; TOPICS],
    pub recent_topics: [u32; TOPICS],
    pub hours: [u32; 24],
    pub temps: u32,
    pub active_hours: u64,
    pub active_minutes: u64,
    pub max_minute: u64,
    pub gap_n: u64,
    pub gap_mean: f64,
    pub gap_m2: f64,
    pub top5: u64,
    /// Requests counted before the distinct-prompt sketch was last emptied (by the migration of
    /// a snapshot whose prompt hashes are no longer comparable, see [`Account::reset_word_hashes`]):
    /// novelty is distinct prompts over the requests since.
    #[serde(default)]
    pub novelty_base: u64,
    /// Requests in heavy templates whose slots range over unrelated topics and whose answers
    /// are long-form (see [`Template::broad_long_form`]): combinatorial synthetic-data
    /// generation. Recomputed from the shapes, like `explained` from the templates.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub broad: u64,
}

impl Counters {
    /// Add another account's counters (cluster aggregation).
    pub fn add(&mut self, o: &Counters) {
        macro_rules! sum { ($($f:ident),*) => { $( self.$f += o.$f; )* } }
        sum!(
            requests,
            reasoning,
            rubric,
            reveal,
            elicit,
            out_dist,
            max_high,
            same_seed,
            single_turn,
            bench,
            harvest,
            completions,
            cancelled,
            input_tokens,
            output_tokens,
            harvest_tokens,
            explained,
            explained_harvest,
            active_hours,
            active_minutes,
            top5,
            novelty_base,
            broad
        );
        for i in 0..TOPICS {
            self.topics[i] += o.topics[i];
            self.harvest_topics[i] += o.harvest_topics[i];
            self.recent_topics[i] += o.recent_topics[i];
        }
        for i in 0..24 {
            self.hours[i] += o.hours[i];
        }
        self.temps |= o.temps;
        self.max_minute = self.max_minute.max(o.max_minute);
        // Pooled gap statistics (Chan et al.).
        let n = self.gap_n + o.gap_n;
        if n > 0 {
            let d = o.gap_mean - self.gap_mean;
            let mean = self.gap_mean + d * o.gap_n as f64 / n as f64;
            self.gap_m2 += o.gap_m2 + d * d * self.gap_n as f64 * o.gap_n as f64 / n as f64;
            self.gap_mean = mean;
            self.gap_n = n;
        }
    }

    /// Signal values from counters plus the distinct-prompt estimate.
    pub fn values(&self, distinct: f64) -> SignalValues {
        self.signal_values(distinct, true)
    }

    /// Signal values with `descriptive` false skipping the costly values that carry no weight
    /// (`topic_breadth`, left at 0): enough for [`SignalValues::score`], which gives the same
    /// score as from [`Counters::values`].
    pub fn scored_values(&self, distinct: f64) -> SignalValues {
        self.signal_values(distinct, false)
    }

    fn signal_values(&self, distinct: f64, descriptive: bool) -> SignalValues {
        let n = self.requests.max(1) as f64;
        let share = |x: u64| x as f64 / n;
        let unexplained = self.requests.saturating_sub(self.explained);
        let unexplained_h = self
            .harvest
            .saturating_sub(self.explained_harvest)
            .min(unexplained);
        let harvest_n: u32 = self.harvest_topics.iter().sum();
        let recent_n: u32 = self.recent_topics.iter().sum();
        let all_n: u32 = self.topics.iter().sum();
        let drift = if recent_n >= 64 && all_n >= 4 * recent_n {
            let tv: f64 = (0..TOPICS)
                .map(|i| {
                    (f64::from(self.recent_topics[i]) / f64::from(recent_n)
                        - f64::from(self.topics[i]) / f64::from(all_n))
                    .abs()
                })
                .sum::<f64>()
                / 2.0;
            // Sampling noise of 64+ requests over 32 buckets is ~0.3 TV; only excess counts.
            ((tv - 0.35) / 0.4).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let diurnal = diurnal(&self.hours, self.active_hours);
        let cv = if self.gap_n >= 10 && self.gap_mean > 0.0 {
            (self.gap_m2 / self.gap_n as f64).sqrt() / self.gap_mean
        } else {
            1.0
        };
        let bench = share(self.bench);
        let persistence = (self.active_hours as f64 / 6.0).min(1.0);
        let distinct_temperatures = self.temps.count_ones();
        SignalValues {
            requests: self.requests,
            unexplained_harvest: unexplained_h as f64 / (unexplained as f64 + 10.0),
            broad_template: self.broad as f64 / (self.requests as f64 + 10.0),
            unexplained_share: share(unexplained),
            harvest_share: share(self.harvest),
            harvest_breadth: if harvest_n >= 10 {
                entropy(&self.harvest_topics)
            } else {
                0.0
            },
            elicitation: share(self.elicit),
            reasoning: share(self.reasoning),
            rubric: share(self.rubric),
            output_distribution: share(self.out_dist),
            reveal: share(self.reveal),
            benchmark_overlap: bench,
            persistence,
            single_turn: share(self.single_turn),
            novelty: (distinct / self.requests.saturating_sub(self.novelty_base).max(1) as f64)
                .min(1.0),
            topic_breadth: if descriptive {
                entropy(&self.topics)
            } else {
                0.0
            },
            topic_drift: drift,
            template_concentration: share(self.top5),
            temperature_sweep: (f64::from(distinct_temperatures.saturating_sub(2)) / 4.0).min(1.0),
            distinct_temperatures,
            fixed_seed: share(self.same_seed),
            max_tokens_high: share(self.max_high),
            diurnal,
            regularity: (1.0 - cv).clamp(0.0, 1.0),
            burstiness: if self.active_minutes > 0 {
                self.max_minute as f64 / (n / self.active_minutes as f64)
            } else {
                0.0
            },
            cancellations: if self.completions >= 10 {
                self.cancelled as f64 / self.completions as f64
            } else {
                0.0
            },
            one_off_benchmark: if bench >= 0.8 {
                (1.0 - (self.active_hours as f64 - 3.0) / 3.0).clamp(0.0, 1.0)
            } else {
                0.0
            },
            active_hours: self.active_hours,
            linked_accounts: 0,
            synchronized_accounts: 0,
            contrast: Contrast::default(),
        }
    }
}

/// Strength (0..1) of a human day/night rhythm in an hour-of-day histogram: 1 when the
/// quietest six hours hold nothing, 0 when they hold a quarter of the traffic (as flat traffic
/// does). 0 below 24 active hours, too few to tell.
fn diurnal(hours: &[u32; 24], active_hours: u64) -> f64 {
    let total: u32 = hours.iter().sum();
    if active_hours < 24 || total == 0 {
        return 0.0;
    }
    let trough = (0..24)
        .map(|s| (0..6).map(|k| hours[(s + k) % 24]).sum::<u32>())
        .min()
        .unwrap_or(0);
    (1.0 - f64::from(trough) / f64::from(total) / 0.25).clamp(0.0, 1.0)
}

/// The rest of an account needs this many requests (and a tenth as many completions) before a
/// segment is contrasted with it.
pub const CONTRAST_MIN_REST: u64 = 200;
/// A segment's single-turn share this much above the rest's counts fully …
pub const CONTRAST_TURN: f64 = 0.5;
/// … its day/night rhythm this much weaker than the rest's …
pub const CONTRAST_RHYTHM: f64 = 0.4;
/// … and answers this many doublings longer than the rest's (1: twice as long).
pub const CONTRAST_LENGTH: f64 = 1.0;

/// Contrast of a segment (`seg`, its counters with the account's templates applied) with the
/// rest of its account (`account` minus `seg`): harvesting run from one key or one backend of a
/// genuine product turns that segment single-turn, machine-paced and long-answered while the
/// product's own traffic stays conversational, diurnal and brief. Each departure is measured
/// against the rest of the same account, not against a population, so a product whose every
/// key looks alike contrasts with nothing, and only traffic no narrow product template explains
/// counts (a product's batch key filling its own template is explained). The three must hold
/// together (a product: the value is their product): a batch key that is single-turn and runs
/// at night but answers briefly (labelling, summaries) has no answer-length departure.
pub fn contrast(seg: &Counters, account: &Counters) -> Contrast {
    let rest_n = account.requests.saturating_sub(seg.requests);
    let rest_done = account.completions.saturating_sub(seg.completions);
    if rest_n < CONTRAST_MIN_REST
        || rest_done < CONTRAST_MIN_REST / 10
        || seg.requests == 0
        || seg.completions < 10
    {
        return Contrast::default();
    }
    let single_turn = seg.single_turn as f64 / seg.requests as f64;
    let rest_single_turn =
        account.single_turn.saturating_sub(seg.single_turn) as f64 / rest_n as f64;
    let mut rest_hours = [0u32; 24];
    for (r, (a, s)) in rest_hours
        .iter_mut()
        .zip(account.hours.iter().zip(&seg.hours))
    {
        *r = a.saturating_sub(*s);
    }
    let rhythm = diurnal(&seg.hours, seg.active_hours);
    let rest_rhythm = diurnal(&rest_hours, account.active_hours);
    let seg_len = seg.output_tokens as f64 / seg.completions as f64;
    let rest_len =
        account.output_tokens.saturating_sub(seg.output_tokens) as f64 / rest_done as f64;
    let answer_ratio = seg_len / rest_len.max(1.0);
    let unexplained = seg.requests.saturating_sub(seg.explained) as f64 / seg.requests as f64;
    let turn = ((single_turn - rest_single_turn) / CONTRAST_TURN).clamp(0.0, 1.0);
    let time = ((rest_rhythm - rhythm) / CONTRAST_RHYTHM).clamp(0.0, 1.0);
    let length = (answer_ratio.max(1.0).log2() / CONTRAST_LENGTH).clamp(0.0, 1.0);
    Contrast {
        value: turn * time * length * unexplained,
        single_turn,
        rest_single_turn,
        rhythm,
        rest_rhythm,
        answer_ratio,
    }
}

/// One template (prompt skeleton head) with its volume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Template {
    pub simhash: u64,
    pub count: u32,
    /// Space-saving overestimate inherited from the evicted entry.
    pub err: u32,
    pub harvest: u32,
    /// Topic histogram of requests in this template (saturating, halved at 255).
    pub topics: Vec<u8>,
    pub skeleton: String,
    pub registered: bool,
    /// Recorded before a change of the word hashes (restored from an older snapshot): its
    /// SimHash is no longer comparable, so no request matches it, but it still explains the
    /// requests it counted. Evicted like any other template.
    #[serde(default)]
    pub frozen: bool,
    /// Output tokens and completions attributed to the requests counted here (short answers,
    /// see [`Template::short_output`]).
    #[serde(default)]
    pub out_tokens: u64,
    #[serde(default)]
    pub completions: u32,
}

/// A template is broad when the normalized topic entropy of its requests is at least this.
pub const BROAD_ENTROPY: f64 = 0.55;
/// Long-form: mean output tokens per completion at least this …
pub const LONG_FORM_TOKENS: u64 = 500;
/// … and at least this many times the mean input tokens.
pub const LONG_FORM_RATIO: u64 = 5;

impl Template {
    /// A template with nothing counted but `count` requests of which `err` are the
    /// space-saving overestimate.
    pub fn new(simhash: u64, count: u32, err: u32) -> Template {
        Template {
            simhash,
            count,
            err,
            harvest: 0,
            topics: vec![0; TOPICS],
            skeleton: String::new(),
            registered: false,
            frozen: false,
            out_tokens: 0,
            completions: 0,
        }
    }

    fn guaranteed(&self) -> u32 {
        self.count.saturating_sub(self.err)
    }
    /// Heavy and topically narrow: product traffic that "explains" its requests.
    pub fn explains(&self, requests: u64, narrow_entropy: f64) -> bool {
        let g = self.guaranteed();
        g >= HEAVY_TEMPLATE_MIN
            && f64::from(g) >= HEAVY_TEMPLATE_SHARE * requests as f64
            && (entropy(&self.topics) <= narrow_entropy || self.short_output())
    }
    /// Answers average at most [`SHORT_OUTPUT_TOKENS`] over at least 10 completions: a
    /// classification, extraction or labelling pipeline, whose output distributions
    /// (logprobs, several samples) are confidence scores, not text to learn from.
    pub fn short_output(&self) -> bool {
        self.completions >= 10
            && self.out_tokens / u64::from(self.completions) <= SHORT_OUTPUT_TOKENS
    }
}

/// A template with short answers explains its traffic whatever its topics (see
/// [`Template::short_output`]).
pub const SHORT_OUTPUT_TOKENS: u64 = 64;
/// Prompt shapes tracked per account (space-saving heavy hitters).
pub const MAX_SHAPES: usize = 6;

/// A prompt shape (see [`crate::features::RequestFeatures::shape`]) with the topics and answer
/// lengths of its requests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Shape {
    pub hash: u64,
    /// Requests counted (the ordering that decides which shape is replaced next), including
    /// `err`.
    pub count: u32,
    /// Requests a shape admitted from the candidates ([`ShapeCandidate`]) brought with it:
    /// counted for its rank, not in its statistics; 0 for a shape that took a free slot or was
    /// read from an older snapshot.
    #[serde(default)]
    pub err: u32,
    /// Requests carrying harvesting signals.
    #[serde(default)]
    pub harvest: u32,
    /// Topic histogram (saturating, halved at 255).
    pub topics: Vec<u8>,
    pub in_tokens: u64,
    pub out_tokens: u64,
    pub completions: u32,
}

impl Shape {
    /// Requests of this shape since it took its slot (its topics and tokens count these).
    pub fn own(&self) -> u32 {
        self.count.saturating_sub(self.err)
    }

    /// Heavy, with slots over unrelated topics and long-form answers: a fixed template filled
    /// with encyclopaedic topics to generate training text. A product template's slots stay in
    /// one domain (narrow); translation and labelling pipelines range over every topic but
    /// answer about as long as, or shorter than, the input.
    pub fn broad_long_form(&self, requests: u64) -> bool {
        let own = self.own();
        if own < HEAVY_TEMPLATE_MIN
            || f64::from(own) < BROAD_MIN_SHARE * requests as f64
            || self.completions < 10
        {
            return false;
        }
        let out = self.out_tokens / u64::from(self.completions);
        let input = self.in_tokens / u64::from(own.max(1));
        out >= LONG_FORM_TOKENS
            && out >= LONG_FORM_RATIO * input.max(1)
            && entropy(&self.topics) >= BROAD_ENTROPY
    }

    /// Heavy with short answers (see [`Template::short_output`]): a classification or
    /// labelling pipeline, which explains its traffic like a narrow template.
    pub fn short_output(&self, requests: u64) -> bool {
        self.own() >= HEAVY_TEMPLATE_MIN
            && f64::from(self.own()) >= BROAD_MIN_SHARE * requests as f64
            && self.completions >= 10
            && self.out_tokens / u64::from(self.completions) <= SHORT_OUTPUT_TOKENS
    }
}

/// Candidate shapes counted per account while the shape table is full.
pub const MAX_SHAPE_CANDIDATES: usize = 8;

/// A shape seen while every slot of the shape table was taken. Without candidates a full table
/// locked out a heavy shape that arrived late: a new shape started from zero in the weakest
/// slot and was replaced by the next new shape before it could climb (a chat app's every
/// request brings a new tail shape). Candidates are counted by space-saving (a replaced
/// candidate's successor inherits its count as `err`, so a shape that keeps arriving stays
/// counted); one is admitted when its guaranteed count (`count - err`: requests seen since it
/// became a candidate) exceeds the count of the weakest shape in the table, whose slot it
/// takes. A one-off shape's guaranteed count is 1, so the churn of new shapes never enters the
/// table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShapeCandidate {
    pub hash: u64,
    pub count: u32,
    pub err: u32,
}

/// Count `hash` among the candidates; returns its guaranteed count.
fn count_candidate(table: &mut Vec<ShapeCandidate>, hash: u64) -> u32 {
    let Some((i, _)) = space_saving(
        table,
        MAX_SHAPE_CANDIDATES,
        |c| c.hash == hash,
        |c| c.count,
        |min| ShapeCandidate {
            hash,
            count: min,
            err: min,
        },
    ) else {
        return 0;
    };
    match table.get_mut(i) {
        Some(c) => {
            c.count = c.count.saturating_add(1);
            c.count.saturating_sub(c.err)
        }
        None => 0,
    }
}

/// A shape counts as a broad template only with at least this share of the account's requests.
pub const BROAD_MIN_SHARE: f64 = 0.05;

/// Hourly timeline bucket.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HourBucket {
    /// Unix time of the start of the hour.
    pub hour: i64,
    pub requests: u32,
    pub harvesting: u32,
    pub elicitation: u32,
    pub output_distribution: u32,
    pub benchmark: u32,
    pub tokens: u64,
    pub harvesting_tokens: u64,
}

/// Daily extent bucket (per model owner).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DayBucket {
    /// Unix time of the start of the day (UTC).
    pub day: i64,
    pub requests: u32,
    pub harvesting: u32,
    pub tokens: u64,
    pub harvesting_tokens: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OwnerExtent {
    pub owner: String,
    pub days: VecDeque<DayBucket>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeyStats {
    pub key: String,
    pub requests: u64,
    pub harvesting: u64,
    pub elicitation: u64,
    pub output_distribution: u64,
    pub benchmark: u64,
    pub tokens: u64,
    pub harvesting_tokens: u64,
    /// Whether the key's latest request carried harvesting signals (attributes completions).
    pub last_harvest: bool,
    pub last_owner: Option<u16>,
    /// Template slot of the key's latest request (attributes output tokens to templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_template: Option<u16>,
    /// Shape slots (head, tail) of the key's latest request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_shape: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_shape_tail: Option<u16>,
}

/// A retained prompt (flagged accounts only).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SamplePrompt {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub key: String,
    pub model_owner: Option<String>,
    pub harvesting: bool,
    pub text: String,
}

/// Everything kept about one organization.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    pub counters: Counters,
    pub distinct: Hll,
    pub templates: Vec<Template>,
    pub timeline: VecDeque<HourBucket>,
    pub owners: Vec<OwnerExtent>,
    pub keys: Vec<KeyStats>,
    pub ips: VecDeque<IpAddr>,
    pub link_keys: Vec<u64>,
    pub sample: VecDeque<SamplePrompt>,
    pub last_seed: Option<i64>,
    pub last_time: Option<i64>,
    pub last_hour: Option<i64>,
    pub last_minute: Option<i64>,
    pub minute_count: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_seen: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    pub score: f64,
    pub own_score: f64,
    pub flagged: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub flagged_at: Option<OffsetDateTime>,
    pub requests_until_flagged: Option<u64>,
    pub cluster: Option<String>,
    pub cluster_score: f64,
    pub cluster_flagged: bool,
    pub linked: usize,
    /// Accounts linked to this one by synchronized activity (clustered or not).
    #[serde(default)]
    pub sync_linked: usize,
    /// Per key, address, network and end user (see [`crate::segment`]).
    #[serde(default)]
    pub segments: Segments,
    /// Score of the account's traffic as a whole (`own_score` is the higher of this and the
    /// worst segment's).
    #[serde(default)]
    pub whole_score: f64,
    /// The segment whose score set `own_score`, when one scored higher than the whole account.
    #[serde(default)]
    pub worst_segment: Option<String>,
    /// Score of the worst segment at its last evaluation (0 when none qualifies).
    #[serde(default)]
    pub segment_score: f64,
    /// Windowed mean of the hashed request features (the distribution test's profile).
    #[serde(default)]
    pub profile: Vec<f32>,
    #[serde(default)]
    pub last_topic: Option<u8>,
    #[serde(default)]
    pub last_template_slot: Option<u16>,
    /// Prompt shapes (see [`Shape`]).
    #[serde(default)]
    pub shapes: Vec<Shape>,
    /// Shapes waiting for a slot in `shapes` (see [`ShapeCandidate`]).
    #[serde(default)]
    pub shape_candidates: Vec<ShapeCandidate>,
    /// Prompt-wrapper shingles (see [`crate::features::RequestFeatures::wrapper_head`]).
    #[serde(default)]
    pub wrappers: Vec<WrapperStat>,
    /// Activity in 10-minute slots (see [`crate::pool::Activity`]).
    #[serde(default)]
    pub activity: crate::pool::Activity,
}

impl Default for Account {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            distinct: Hll::new(HLL_PRECISION),
            templates: Vec::new(),
            timeline: VecDeque::new(),
            owners: Vec::new(),
            keys: Vec::new(),
            ips: VecDeque::new(),
            link_keys: Vec::new(),
            sample: VecDeque::new(),
            last_seed: None,
            last_time: None,
            last_hour: None,
            last_minute: None,
            minute_count: 0,
            first_seen: None,
            last_seen: None,
            score: 0.0,
            own_score: 0.0,
            flagged: false,
            flagged_at: None,
            requests_until_flagged: None,
            cluster: None,
            cluster_score: 0.0,
            cluster_flagged: false,
            linked: 0,
            sync_linked: 0,
            segments: Segments::default(),
            whole_score: 0.0,
            worst_segment: None,
            segment_score: 0.0,
            profile: Vec::new(),
            last_topic: None,
            last_template_slot: None,
            shapes: Vec::new(),
            shape_candidates: Vec::new(),
            wrappers: Vec::new(),
            activity: crate::pool::Activity::default(),
        }
    }
}

/// Result of folding one request into an account.
pub struct Update {
    pub harvesting: bool,
    /// Template simhash that just became heavy enough to register for cross-account links.
    pub register_template: Option<u64>,
    /// Whether the client IP is new for this account.
    pub new_ip: bool,
    /// Unix time (seconds) of this request when it starts a burst (no request in the
    /// [`crate::sync::QUIET_MINUTES`] minutes before).
    pub burst_start: Option<i64>,
    /// Whether the account is active in at most [`crate::sync::MAX_DUTY_CYCLE`] of the minutes
    /// since it was first seen.
    pub bursty: bool,
    /// A wrapper shingle that just became heavy enough to register for cross-account links
    /// (hash, head or tail).
    pub register_wrapper: Option<(u64, bool)>,
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Account {
    /// Fold one request in. `skeleton` is called only when a template needs its text.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        f: &RequestFeatures,
        bench_hit: bool,
        time: OffsetDateTime,
        key: &str,
        ip: Option<IpAddr>,
        owner: Option<&str>,
        max_tokens_high: u64,
        end_user: Option<&[u8]>,
        skeleton: &dyn Fn() -> String,
    ) -> Update {
        let prev_time = self.last_time;
        let c = &mut self.counters;
        let harvesting = f.elicits() || f.harvest_params();
        c.requests += 1;
        c.reasoning += u64::from(f.reasoning);
        c.rubric += u64::from(f.rubric);
        c.reveal += u64::from(f.reveal);
        c.elicit += u64::from(f.reasoning || f.rubric);
        c.out_dist += u64::from(f.harvest_params());
        c.max_high += u64::from(f.max_tokens.is_some_and(|m| m >= max_tokens_high));
        c.single_turn += u64::from(!f.multi_turn());
        c.bench += u64::from(bench_hit);
        c.harvest += u64::from(harvesting);
        c.input_tokens += f.input_tokens;
        if let Some(t) = f.temperature {
            c.temps |= 1 << t.min(31);
        }
        if let Some(s) = f.seed {
            c.same_seed += u64::from(self.last_seed == Some(s));
            self.last_seed = Some(s);
        }
        if f.topic != NO_TOPIC {
            let t = usize::from(f.topic) % TOPICS;
            c.topics[t] += 1;
            c.recent_topics[t] += 1;
            if c.recent_topics.iter().sum::<u32>() >= 512 {
                c.recent_topics.iter_mut().for_each(|x| *x /= 2);
            }
            if harvesting {
                c.harvest_topics[t] += 1;
            }
        }
        if f.parsed {
            self.distinct.insert(f.prompt_hash);
        }

        // Timing.
        let ts = time.unix_timestamp();
        let hour = ts.div_euclid(3600);
        let minute = ts.div_euclid(60);
        c.hours[time.hour() as usize % 24] += 1;
        let burst_start = self
            .last_minute
            .is_none_or(|m| minute - m > crate::sync::QUIET_MINUTES)
            .then_some(ts);
        if self.last_hour.is_none_or(|h| hour > h) {
            c.active_hours += 1;
            self.last_hour = Some(hour);
        }
        if self.last_minute.is_none_or(|m| minute > m) {
            c.active_minutes += 1;
            self.last_minute = Some(minute);
            self.minute_count = 0;
        }
        self.minute_count += 1;
        c.max_minute = c.max_minute.max(self.minute_count);
        if let Some(prev) = self.last_time {
            let gap = (ts - prev).clamp(0, 6 * 3600) as f64;
            c.gap_n += 1;
            let d = gap - c.gap_mean;
            c.gap_mean += d / c.gap_n as f64;
            c.gap_m2 += d * (gap - c.gap_mean);
        }
        self.last_time = Some(ts.max(self.last_time.unwrap_or(ts)));
        if self.first_seen.is_none() {
            self.first_seen = Some(time);
        }
        if self.last_seen.is_none_or(|l| time > l) {
            self.last_seen = Some(time);
        }
        let first_minute = self
            .first_seen
            .map_or(minute, |t| t.unix_timestamp().div_euclid(60));
        let lifetime = (minute - first_minute + 1).max(60) as f64;
        let bursty = c.active_minutes as f64 <= crate::sync::MAX_DUTY_CYCLE * lifetime;

        // Templates (space-saving heavy hitters over template SimHashes).
        let mut register_template = None;
        let sim = f.template_simhash;
        let idx = space_saving(
            &mut self.templates,
            MAX_TEMPLATES,
            |t| !t.frozen && hamming(t.simhash, sim) <= TEMPLATE_RADIUS,
            |t| t.count,
            |min| Template::new(sim, min, min),
        )
        .map(|(i, replaced)| {
            if replaced {
                self.segments.reset_template(i);
            }
            i
        });
        if let Some(t) = idx.and_then(|i| self.templates.get_mut(i)) {
            t.count += 1;
            t.harvest += u32::from(harvesting);
            count_topic(&mut t.topics, f.topic);
            if t.skeleton.is_empty() && t.count - t.err >= 3 {
                t.skeleton = truncate(&skeleton(), MAX_SKELETON_BYTES);
            }
            let g = t.count - t.err;
            if !t.registered
                && f.template_len >= 10
                && g >= 5
                && f64::from(g) >= 0.2 * c.requests as f64
            {
                t.registered = true;
                register_template = Some(t.simhash);
            }
        }

        // Timeline and extents.
        let tokens = f.input_tokens;
        let hour_start = hour * 3600;
        // Buckets are in increasing hour order: the current hour is the last one or a new one,
        // so only out-of-order events search the window.
        let pos = match self.timeline.back() {
            Some(b) if b.hour == hour_start => Some(self.timeline.len() - 1),
            Some(b) if b.hour > hour_start => {
                self.timeline.iter().rposition(|b| b.hour == hour_start)
            }
            _ => None,
        };
        let pos = match pos {
            Some(p) => Some(p),
            None if self.timeline.back().is_none_or(|b| b.hour < hour_start) => {
                if self.timeline.len() >= TIMELINE_HOURS {
                    self.timeline.pop_front();
                }
                self.timeline.push_back(HourBucket {
                    hour: hour_start,
                    ..Default::default()
                });
                Some(self.timeline.len() - 1)
            }
            None => None, // older than the retained window or out of order: counted in totals only
        };
        let bucket = pos.and_then(|p| self.timeline.get_mut(p));
        if let Some(b) = bucket {
            b.requests += 1;
            b.harvesting += u32::from(harvesting);
            b.elicitation += u32::from(f.elicits());
            b.output_distribution += u32::from(f.harvest_params());
            b.benchmark += u32::from(bench_hit);
            b.tokens += tokens;
            if harvesting {
                b.harvesting_tokens += tokens;
            }
        }
        if harvesting {
            c.harvest_tokens += tokens;
        }
        let owner_idx = owner.map(|o| self.owner_index(o));
        if let Some(oi) = owner_idx {
            add_day(
                &mut self.owners[oi].days,
                ts,
                1,
                u32::from(harvesting),
                tokens,
                harvesting,
            );
        }
        let ki = self.key_index(key);
        if let Some(k) = self.keys.get_mut(ki) {
            k.requests += 1;
            k.harvesting += u64::from(harvesting);
            k.elicitation += u64::from(f.elicits());
            k.output_distribution += u64::from(f.harvest_params());
            k.benchmark += u64::from(bench_hit);
            k.tokens += tokens;
            if harvesting {
                k.harvesting_tokens += tokens;
            }
            k.last_harvest = harvesting;
            k.last_owner = owner_idx.map(|i| i as u16);
            k.last_template = idx.map(|i| i as u16);
        }
        let shape = self.bump_shape(f, f.shape, harvesting);
        let shape_tail = self.bump_shape(f, f.shape_tail, harvesting);
        if let Some(k) = self.keys.get_mut(ki) {
            k.last_shape = shape.map(|i| i as u16);
            k.last_shape_tail = shape_tail.map(|i| i as u16);
        }
        self.segments.observe(
            key,
            ip,
            end_user,
            &SegRequest {
                f,
                bench_hit,
                harvesting,
                max_tokens_high,
                hour,
                hour_of_day: time.hour() as usize,
                template: idx,
                shapes: [shape, shape_tail],
            },
        );
        self.update_profile(f, bench_hit, ts, prev_time, idx);
        self.activity.touch(ts);
        let mut register_wrapper = None;
        for (h, head) in [(f.wrapper_head, true), (f.wrapper_tail, false)] {
            if h == 0 {
                continue;
            }
            if let Some(w) = self.bump_wrapper(h, head) {
                register_wrapper = Some(w);
            }
        }

        let mut new_ip = false;
        if let Some(ip) = ip
            && !self.ips.contains(&ip)
        {
            if self.ips.len() >= MAX_IPS {
                self.ips.pop_front();
            }
            self.ips.push_back(ip);
            new_ip = true;
        }
        Update {
            harvesting,
            register_template,
            new_ip,
            burst_start,
            bursty,
            register_wrapper,
        }
    }

    /// Count the request's prompt shape (space-saving over [`MAX_SHAPES`]; a replaced shape
    /// starts from zero and its segment counts are reset). Returns its slot.
    fn bump_shape(&mut self, f: &RequestFeatures, hash: u64, harvesting: bool) -> Option<usize> {
        if hash == 0 {
            return None;
        }
        let fresh = |count| Shape {
            hash,
            count,
            err: count,
            harvest: 0,
            topics: vec![0; TOPICS],
            in_tokens: 0,
            out_tokens: 0,
            completions: 0,
        };
        let i = match self.shapes.iter().position(|s| s.hash == hash) {
            Some(i) => i,
            None if self.shapes.len() < MAX_SHAPES => {
                self.shapes.push(fresh(0));
                self.shapes.len() - 1
            }
            None => {
                // The table is full: count the shape among the candidates, and admit it in
                // place of the weakest shape once it was surely seen more often than that one.
                let seen = count_candidate(&mut self.shape_candidates, hash);
                let (i, weakest) = self
                    .shapes
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.count)
                    .map(|(i, s)| (i, s.count))?;
                if seen <= weakest {
                    return None;
                }
                self.shape_candidates.retain(|c| c.hash != hash);
                *self.shapes.get_mut(i)? = fresh(seen - 1);
                self.segments.reset_shape(i);
                i
            }
        };
        let s = self.shapes.get_mut(i)?;
        s.count += 1;
        s.harvest += u32::from(harvesting);
        s.in_tokens += f.input_tokens;
        count_topic(&mut s.topics, f.topic);
        Some(i)
    }

    /// Count a wrapper shingle (space-saving over [`MAX_WRAPPERS`]); returns it when it just
    /// became heavy enough to register.
    fn bump_wrapper(&mut self, hash: u64, head: bool) -> Option<(u64, bool)> {
        let requests = self.counters.requests;
        let (i, _) = space_saving(
            &mut self.wrappers,
            MAX_WRAPPERS,
            |w| w.hash == hash,
            |w| w.count,
            |min| WrapperStat {
                hash,
                count: min / 2,
                registered: false,
                head,
            },
        )?;
        let w = self.wrappers.get_mut(i)?;
        w.count += 1;
        if !w.registered && w.count >= 5 && f64::from(w.count) >= WRAPPER_SHARE * requests as f64 {
            w.registered = true;
            return Some((w.hash, w.head));
        }
        None
    }

    fn owner_index(&mut self, owner: &str) -> usize {
        if let Some(i) = self.owners.iter().position(|o| o.owner == owner) {
            return i;
        }
        if self.owners.len() < MAX_OWNERS - 1 {
            self.owners.push(OwnerExtent {
                owner: truncate(owner, MAX_NAME_BYTES),
                days: VecDeque::new(),
            });
            return self.owners.len() - 1;
        }
        if let Some(i) = self.owners.iter().position(|o| o.owner == "other") {
            return i;
        }
        self.owners.push(OwnerExtent {
            owner: "other".to_owned(),
            days: VecDeque::new(),
        });
        self.owners.len() - 1
    }

    fn key_index(&mut self, key: &str) -> usize {
        if let Some(i) = self.keys.iter().position(|k| k.key == key) {
            return i;
        }
        let name = if self.keys.len() < MAX_KEYS - 1 {
            truncate(key, MAX_NAME_BYTES)
        } else {
            "other".to_owned()
        };
        if let Some(i) = self.keys.iter().position(|k| k.key == name) {
            return i;
        }
        self.keys.push(KeyStats {
            key: name,
            ..Default::default()
        });
        self.keys.len() - 1
    }

    /// Attribute a completion (output tokens, cancellation) to the key's latest request.
    pub fn complete(
        &mut self,
        key: &str,
        time: OffsetDateTime,
        output_tokens: u64,
        cancelled: bool,
    ) {
        let c = &mut self.counters;
        c.completions += 1;
        c.cancelled += u64::from(cancelled);
        c.output_tokens += output_tokens;
        let ki = self.key_index(key);
        let (harvest, owner, template, shapes) = match self.keys.get_mut(ki) {
            Some(k) => {
                k.tokens += output_tokens;
                if k.last_harvest {
                    k.harvesting_tokens += output_tokens;
                }
                (
                    k.last_harvest,
                    k.last_owner,
                    k.last_template,
                    [k.last_shape, k.last_shape_tail],
                )
            }
            None => (false, None, None, [None, None]),
        };
        self.segments.complete(key, output_tokens);
        for i in shapes.into_iter().flatten() {
            if let Some(s) = self.shapes.get_mut(usize::from(i)) {
                s.out_tokens += output_tokens;
                s.completions += 1;
            }
        }
        if let Some(t) = template.and_then(|i| self.templates.get_mut(usize::from(i))) {
            t.out_tokens += output_tokens;
            t.completions += 1;
        }
        if harvest {
            self.counters.harvest_tokens += output_tokens;
        }
        let hour_start = time.unix_timestamp().div_euclid(3600) * 3600;
        if let Some(b) = self
            .timeline
            .iter_mut()
            .rev()
            .find(|b| b.hour == hour_start)
        {
            b.tokens += output_tokens;
            if harvest {
                b.harvesting_tokens += output_tokens;
            }
        }
        if let Some(o) = owner.and_then(|i| self.owners.get_mut(usize::from(i))) {
            add_day(
                &mut o.days,
                time.unix_timestamp(),
                0,
                0,
                output_tokens,
                harvest,
            );
        }
    }

    /// Recompute the template-derived counters (explained traffic, top-5 share).
    pub fn refresh_templates(&mut self, narrow_entropy: f64) {
        let requests = self.counters.requests;
        let (mut ex, mut exh) = (0u64, 0u64);
        for t in &self.templates {
            if t.explains(requests, narrow_entropy) {
                ex += u64::from(t.guaranteed());
                exh += u64::from(t.harvest.min(t.guaranteed()));
            }
        }
        // Short-answer shapes explain their traffic too (labelling pipelines whose slots break
        // the template SimHash); one of the two explanations counts, never their sum.
        let (mut sx, mut sxh) = (0u64, 0u64);
        for s in self.shapes.iter().filter(|s| s.short_output(requests)) {
            sx += u64::from(s.own());
            sxh += u64::from(s.harvest.min(s.own()));
        }
        (ex, exh) = better_explanation(
            (ex, exh),
            (sx.min(requests), sxh.min(self.counters.harvest)),
            requests,
            self.counters.harvest,
        );
        let broad: u64 = self
            .shapes
            .iter()
            .filter(|s| s.broad_long_form(requests))
            .map(|s| u64::from(s.own()))
            .sum::<u64>()
            .min(requests);
        self.counters.explained = ex;
        self.counters.explained_harvest = exh;
        self.counters.broad = broad;
        let mut top = [0u32; 5];
        for t in &self.templates {
            let g = t.guaranteed();
            if g > top[4] {
                let mut i = 4;
                while i > 0 && top[i - 1] < g {
                    top[i] = top[i - 1];
                    i -= 1;
                }
                top[i] = g;
            }
        }
        self.counters.top5 = top.iter().map(|&c| u64::from(c)).sum();
    }

    /// Forget what was derived from word hashes that are no longer computed the same way (a
    /// snapshot of an older format): the distinct-prompt sketch (novelty then counts the requests
    /// from here on, [`Counters::novelty_base`]) and the topic histograms (topic buckets are
    /// labelled by the hashes). Templates are kept but frozen ([`Template::frozen`]): they still
    /// explain the traffic they counted — dropping them would make a product customer's heavy,
    /// harvesting-looking template traffic unexplained at once — while new requests build new
    /// templates. Counters, timelines, extents, keys, addresses, link keys, flags, clusters and
    /// samples do not depend on word hashes and are kept. Returns the templates frozen.
    pub fn reset_word_hashes(&mut self) -> usize {
        let c = &mut self.counters;
        self.distinct = Hll::new(HLL_PRECISION);
        c.novelty_base = c.requests;
        self.segments.start_novelty(false);
        c.topics = [0; TOPICS];
        c.harvest_topics = [0; TOPICS];
        c.recent_topics = [0; TOPICS];
        let mut frozen = 0;
        for t in &mut self.templates {
            frozen += usize::from(!t.frozen);
            t.frozen = true;
        }
        frozen
    }

    /// Current signal values.
    pub fn values(&self) -> SignalValues {
        let mut v = self.counters.values(self.distinct.estimate());
        v.linked_accounts = self.linked;
        v.synchronized_accounts = self.sync_linked;
        v
    }

    /// The score of the account's traffic as a whole (same as `values().score(weights)`,
    /// without the descriptive values).
    pub fn own_score(&self, weights: &crate::score::Weights) -> f64 {
        self.counters
            .scored_values(self.distinct.estimate())
            .score(weights)
    }

    /// Template-derived counters of one segment, from the account's templates (the same rules
    /// as [`Account::refresh_templates`]).
    fn segment_counters(&self, seg: &Segment, narrow_entropy: f64) -> crate::account::Counters {
        let mut c = seg.counters.to_counters();
        let requests = self.counters.requests;
        let (mut ex, mut exh) = (0u64, 0u64);
        for (i, t) in self.templates.iter().enumerate() {
            let n = u64::from(seg.tpl.get(i).copied().unwrap_or(0));
            if n == 0 {
                continue;
            }
            if t.explains(requests, narrow_entropy) {
                ex += n;
                exh += u64::from(seg.tpl_harvest.get(i).copied().unwrap_or(0)).min(n);
            }
        }
        let (mut sx, mut sxh) = (0u64, 0u64);
        for (i, sh) in self.shapes.iter().enumerate() {
            if sh.short_output(requests) {
                sx += u64::from(seg.shp.get(i).copied().unwrap_or(0));
                sxh += u64::from(seg.shp_harvest.get(i).copied().unwrap_or(0));
            }
        }
        (ex, exh) = better_explanation(
            (ex, exh),
            (sx.min(c.requests), sxh.min(c.harvest)),
            c.requests,
            c.harvest,
        );
        let broad: u64 = self
            .shapes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.broad_long_form(requests))
            .map(|(i, _)| u64::from(seg.shp.get(i).copied().unwrap_or(0)))
            .sum();
        c.explained = ex.min(c.requests);
        c.explained_harvest = exh.min(c.harvest);
        c.broad = broad.min(c.requests);
        c
    }

    /// Link keys of the templates that carry at least half of this account's requests (a
    /// shared template clusters two accounts only when it dominates both, see
    /// [`crate::coord::LinkKind::Template`]).
    pub fn dominant_template_keys(&self) -> Vec<u64> {
        let half = self.counters.requests / 2;
        self.templates
            .iter()
            .filter(|t| t.registered && !t.frozen && u64::from(t.guaranteed()) >= half.max(1))
            .map(|t| {
                crate::coord::link_key(crate::coord::LinkKind::Template, &t.simhash.to_le_bytes())
            })
            .collect()
    }

    /// Score the segments with at least `min_requests` requests that are not the whole
    /// account, and return the worst (highest) with its label. A segment's novelty is counted
    /// like the account's, from its own distinct-prompt sketch ([`Segment::distinct`]).
    pub fn score_segments(
        &mut self,
        weights: &crate::score::Weights,
        min_requests: u64,
        narrow_entropy: f64,
    ) -> Option<(f64, String)> {
        let total = self.counters.requests;
        let mut worst: Option<(f64, String)> = None;
        let scores: Vec<Option<f64>> = self
            .segments
            .list
            .iter()
            .map(|s| {
                let n = u64::from(s.counters.requests);
                (n >= min_requests.max(1) && n < total).then(|| {
                    self.segment_signal_values(s, narrow_entropy, false)
                        .score(weights)
                })
            })
            .collect();
        for (s, score) in self.segments.list.iter_mut().zip(scores) {
            let Some(score) = score else {
                continue;
            };
            s.score = score;
            if worst.as_ref().is_none_or(|(w, _)| score > *w) {
                worst = Some((score, s.label()));
            }
        }
        worst
    }

    /// Signal values of one segment (for the evidence).
    pub fn segment_values(&self, seg: &Segment, narrow_entropy: f64) -> SignalValues {
        self.segment_signal_values(seg, narrow_entropy, true)
    }

    /// Signal values of one segment: its counters with the account's templates applied, its
    /// own novelty, and its contrast with the rest of the account (`descriptive` as in
    /// [`Counters::values`]).
    fn segment_signal_values(
        &self,
        seg: &Segment,
        narrow_entropy: f64,
        descriptive: bool,
    ) -> SignalValues {
        let (distinct, since) = seg.novelty_counts();
        let mut c = self.segment_counters(seg, narrow_entropy);
        c.novelty_base = c.requests.saturating_sub(u64::from(since));
        let mut v = c.signal_values(distinct, descriptive);
        v.contrast = contrast(&c, &self.counters);
        v
    }

    /// Fold one request into the distribution test's profile: a windowed mean of hashed
    /// request features (what is asked for, how long, how often the topic and template change,
    /// how fast requests follow each other).
    fn update_profile(
        &mut self,
        f: &RequestFeatures,
        bench_hit: bool,
        ts: i64,
        prev: Option<i64>,
        tpl: Option<usize>,
    ) {
        if self.profile.len() != PROFILE_DIMS {
            self.profile = vec![0.0; PROFILE_DIMS];
        }
        let gap = prev.map_or(i64::MAX, |p| ts.saturating_sub(p).abs());
        let topic_changed = f.topic != NO_TOPIC && self.last_topic.is_some_and(|t| t != f.topic);
        let template_same = tpl.is_some() && tpl.map(|i| i as u16) == self.last_template_slot;
        let x: [bool; PROFILE_DIMS] = [
            f.reasoning || f.rubric,
            f.harvest_params(),
            !f.multi_turn(),
            f.max_tokens.is_some_and(|m| m >= 1500),
            f.max_tokens.is_none(),
            f.temperature.is_some_and(|t| t >= 7),
            f.temperature.is_none(),
            f.words < 20,
            f.words >= 100,
            f.assistant_turns >= 2,
            topic_changed,
            bench_hit,
            template_same,
            gap < 10,
            gap >= 3600,
            f.reveal,
        ];
        let n = self.counters.requests.max(1);
        let a = 1.0 / n.min(PROFILE_WINDOW) as f32;
        for (p, &v) in self.profile.iter_mut().zip(x.iter()) {
            *p += a * (f32::from(u8::from(v)) - *p);
        }
        if f.topic != NO_TOPIC {
            self.last_topic = Some(f.topic);
        }
        self.last_template_slot = tpl.map(|i| i as u16);
    }

    /// Keep a prompt in the evidence sample (flagged accounts only), pruning by event time.
    pub fn retain_sample(&mut self, s: SamplePrompt, size: usize, retention_days: u32) {
        if size == 0 {
            return;
        }
        let now = s.time;
        self.prune_sample(now, retention_days);
        if self.sample.len() >= size {
            self.sample.pop_front();
        }
        self.sample.push_back(SamplePrompt {
            text: truncate(&s.text, MAX_SAMPLE_BYTES),
            ..s
        });
    }

    /// Drop samples older than the retention period relative to `now` (event time).
    pub fn prune_sample(&mut self, now: OffsetDateTime, retention_days: u32) {
        let cutoff = now - time::Duration::days(i64::from(retention_days));
        self.sample.retain(|s| s.time >= cutoff);
    }
}

fn add_day(
    days: &mut VecDeque<DayBucket>,
    ts: i64,
    requests: u32,
    harvesting: u32,
    tokens: u64,
    harvest: bool,
) {
    let day = ts.div_euclid(86_400) * 86_400;
    let b = match days.iter_mut().rev().find(|b| b.day == day) {
        Some(b) => b,
        None => {
            if days.back().is_some_and(|b| b.day > day) {
                return;
            }
            if days.len() >= OWNER_DAYS {
                days.pop_front();
            }
            days.push_back(DayBucket {
                day,
                ..Default::default()
            });
            match days.back_mut() {
                Some(b) => b,
                None => return,
            }
        }
    };
    b.requests += requests;
    b.harvesting += harvesting;
    b.tokens += tokens;
    if harvest {
        b.harvesting_tokens += tokens;
    }
}

/// Upper bound, in bytes, of the memory one organization can hold (excluding allocator
/// overhead), computed from the sketch sizes above; `sample_size` is the configured prompt sample
/// (0 unless flagged).
pub fn memory_bound(sample_size: usize) -> usize {
    use std::mem::size_of;
    let hll = 1usize << HLL_PRECISION;
    let templates = MAX_TEMPLATES * (size_of::<Template>() + TOPICS + MAX_SKELETON_BYTES);
    let timeline = TIMELINE_HOURS * size_of::<HourBucket>();
    let owners = MAX_OWNERS
        * (size_of::<OwnerExtent>() + MAX_NAME_BYTES + OWNER_DAYS * size_of::<DayBucket>());
    let keys = MAX_KEYS * (size_of::<KeyStats>() + MAX_NAME_BYTES);
    let ips = MAX_IPS * size_of::<IpAddr>();
    let links = MAX_LINK_KEYS * size_of::<u64>();
    let sample = sample_size * (size_of::<SamplePrompt>() + MAX_SAMPLE_BYTES + 2 * MAX_NAME_BYTES);
    let sync = crate::sync::memory_per_account(MAX_NAME_BYTES);
    let segments = Segments::memory_bound();
    let profile = PROFILE_DIMS * size_of::<f32>();
    let wrappers = MAX_WRAPPERS * size_of::<WrapperStat>()
        + crate::pool::Activity::memory_bound()
        + MAX_SHAPES * (size_of::<Shape>() + TOPICS)
        + MAX_SHAPE_CANDIDATES * size_of::<ShapeCandidate>();
    size_of::<Account>()
        + hll
        + templates
        + timeline
        + owners
        + keys
        + ips
        + links
        + sample
        + sync
        + segments
        + profile
        + wrappers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Weights;

    #[test]
    fn own_score_equals_score_of_all_values() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/sample.jsonl"
        ))
        .unwrap();
        let w = Weights::default();
        let mut accounts: std::collections::HashMap<String, Account> = Default::default();
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let endpoint = v["endpoint"]
                .as_str()
                .and_then(crate::Endpoint::from_path)
                .unwrap_or(crate::Endpoint::Chat);
            let body = serde_json::to_vec(&v["body"]).unwrap();
            let (f, _) = crate::features::extract(endpoint, &body, 4000);
            let time = OffsetDateTime::parse(
                v["time"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            let acc = accounts
                .entry(v["organization"].as_str().unwrap().to_owned())
                .or_default();
            acc.update(
                &f,
                i % 7 == 0,
                time,
                "k",
                None,
                None,
                4000,
                None,
                &String::new,
            );
            if i % 3 == 0 {
                acc.refresh_templates(0.6);
            }
            if i % 11 == 0 {
                acc.complete("k", time, 100, i % 22 == 0);
            }
            let all = acc.values().score(&w);
            assert_eq!(acc.own_score(&w).to_bits(), all.to_bits());
        }
    }

    #[test]
    fn a_heavy_shape_arriving_late_takes_a_slot_from_a_full_table() {
        let f = RequestFeatures::default();
        let mut acc = Account::default();
        // Six shapes fill the table, 50 requests each.
        for round in 0..50 {
            for h in 1..=MAX_SHAPES as u64 {
                assert!(acc.bump_shape(&f, h, false).is_some(), "round {round}");
            }
        }
        // Then a shape on a quarter of the requests, the rest each a new shape (a chat app's
        // tails): every new shape is counted among the candidates, not in the table.
        let late = 1_000;
        let mut admitted_at = None;
        for i in 0..4_000u64 {
            let got = if i % 4 == 0 {
                acc.bump_shape(&f, late, false)
            } else {
                acc.bump_shape(&f, 10_000 + i, false)
            };
            if admitted_at.is_none() && acc.shapes.iter().any(|s| s.hash == late) {
                admitted_at = Some(i);
                assert!(got.is_some());
            }
            assert!(acc.shape_candidates.len() <= MAX_SHAPE_CANDIDATES);
        }
        // Admitted once seen more often than the weakest shape (50), in place of one of the six.
        let at = admitted_at.expect("the late heavy shape was admitted");
        assert!((200..=220).contains(&at), "admitted at request {at}");
        assert_eq!(acc.shapes.len(), MAX_SHAPES);
        let s = acc.shapes.iter().find(|s| s.hash == late).unwrap();
        // Its statistics count only its requests since admission; its rank counts them all.
        assert_eq!(s.own(), (4_000 - at as u32) / 4);
        assert_eq!(s.count, 51 + s.own() - 1);
        assert_eq!(
            acc.shapes.iter().filter(|s| s.hash <= 6).count(),
            MAX_SHAPES - 1
        );
        // No one-off shape ever entered the table (3,000 of them, far more than the weakest
        // shape's count).
        assert!(acc.shapes.iter().all(|s| s.hash < 10_000));
        assert!(acc.shape_candidates.iter().all(|c| c.count - c.err <= 1));
    }

    #[test]
    fn top5_is_the_sum_of_the_five_largest_templates() {
        let mut acc = Account::default();
        for (i, c) in [3u32, 9, 1, 9, 4, 7, 0, 12, 2].iter().enumerate() {
            acc.templates.push(Template::new(i as u64, *c + 1, 1));
        }
        acc.refresh_templates(0.6);
        assert_eq!(acc.counters.top5, 12 + 9 + 9 + 7 + 4);
    }
}
