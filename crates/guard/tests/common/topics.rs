//! Encyclopaedic topics over unrelated domains, for traffic that ranges over every subject.

pub const TOPICS: &[&str] = &[
    "photosynthesis",
    "the fall of the Roman Empire",
    "compound interest",
    "quantum tunneling",
    "sourdough fermentation",
    "contract consideration",
    "plate tectonics",
    "jazz improvisation",
    "marathon pacing",
    "unreliable narrators",
    "garbage collection",
    "antibiotic resistance",
    "the circle of fifths",
    "glacial erosion",
    "the offside rule",
    "habeas corpus",
];
