#!/usr/bin/env python3
"""Independently generated, labelled traffic for `tollgate guard replay` (issue #16).

Written from the issue text alone: the author did not read the detector (crates/guard/src), its
signal tables, DETECTION.md's signal descriptions, or the repository's own traffic generators.
Phrasings, wrappers, parameters, timing and address layouts are invented here.

    python3 scripts/blind_traffic.py --seed 1 --out /tmp/blind1
    -> /tmp/blind1/traffic.jsonl   (JSON Lines, sorted by event time, RFC 3339 times)
       /tmp/blind1/labels.json     (organization -> kind, harvesting, heavy, blatant, campaign, ...)
       /tmp/blind1/benchmark.jsonl (the invented "public" benchmark set, {"prompt": ...} per line,
                                    for an optional replay with `--benchmark`)

Standard library only; the same seed gives byte-identical output.
"""

import argparse
import datetime as dt
import json
import math
import os
import random
import re

START = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)  # a Monday
DAYS = 8
SPAN = DAYS * 86400

# --------------------------------------------------------------------------------------------
# Word banks
# --------------------------------------------------------------------------------------------

ENCYCLOPAEDIA = {
    "history": ["the fall of the Western Roman Empire", "the Meiji Restoration", "the Hanseatic League",
                "the French Revolution", "the Silk Road", "the siege of Vienna in 1683", "the space race",
                "the Mali Empire under Mansa Musa", "the printing press in Europe", "the Haitian Revolution",
                "the partition of India", "the Byzantine Empire", "Tenochtitlan", "the Congress of Vienna",
                "the Apollo program", "the Black Death", "the Qin unification of China", "the Magna Carta"],
    "biology": ["photosynthesis", "CRISPR gene editing", "the human gut microbiome", "mitochondria",
                "coral reef bleaching", "T cells", "bird migration", "tardigrades", "the Krebs cycle",
                "epigenetics", "mycorrhizal networks", "antibiotic resistance", "the evolution of whales",
                "circadian rhythms", "honeybee colony collapse", "octopus intelligence", "seed dispersal"],
    "physics": ["quantum entanglement", "general relativity", "superconductivity", "the photoelectric effect",
                "entropy", "black hole evaporation", "the Doppler effect", "nuclear fusion", "dark matter",
                "the double-slit experiment", "plasma", "semiconductors", "gravitational waves", "friction"],
    "chemistry": ["chemical equilibrium", "catalysts", "polymers", "the periodic table", "redox reactions",
                  "pH and buffers", "organic chirality", "electrolysis", "noble gases", "the Haber process",
                  "crystallization", "isotopes", "combustion"],
    "astronomy": ["exoplanet detection", "the life cycle of stars", "the Kuiper belt", "neutron stars",
                  "the cosmic microwave background", "Saturn's rings", "solar flares", "the Drake equation",
                  "tidal locking", "the Andromeda galaxy", "Mars rovers", "comets"],
    "geography": ["plate tectonics", "the Amazon river basin", "monsoons", "the Sahara desert", "fjords",
                  "the Himalayas", "El Nino", "river deltas", "the Great Barrier Reef", "permafrost",
                  "urban heat islands", "the Ring of Fire", "the Danube"],
    "economics": ["inflation", "comparative advantage", "central bank independence", "supply chains",
                  "the tragedy of the commons", "game theory", "universal basic income", "tariffs",
                  "the 2008 financial crisis", "behavioral economics", "cryptocurrency", "minimum wage",
                  "monopolies", "the gig economy"],
    "philosophy": ["stoicism", "utilitarianism", "the trolley problem", "existentialism", "free will",
                   "Plato's allegory of the cave", "Confucian ethics", "the mind-body problem",
                   "social contract theory", "Buddhist philosophy", "epistemology", "nihilism"],
    "art": ["Impressionism", "the Renaissance", "Japanese woodblock prints", "Cubism", "street art",
            "Frida Kahlo", "Baroque architecture", "Art Nouveau", "Dutch Golden Age painting",
            "abstract expressionism", "ceramics", "photography's early history"],
    "music": ["jazz improvisation", "the history of hip-hop", "Baroque counterpoint", "the blues",
              "K-pop", "the symphony orchestra", "electronic music", "West African drumming", "opera",
              "music theory basics", "the Beatles", "flamenco"],
    "literature": ["Shakespeare's tragedies", "magical realism", "the Harlem Renaissance", "haiku",
                   "dystopian fiction", "Greek mythology", "the novel Don Quixote", "Romantic poetry",
                   "Tolstoy", "science fiction's golden age", "fairy tales", "the epic of Gilgamesh"],
    "technology": ["machine learning", "the history of the internet", "blockchain", "quantum computing",
                   "3D printing", "electric vehicles", "GPS", "cybersecurity", "open source software",
                   "the transistor", "cloud computing", "self-driving cars", "5G networks", "robotics"],
    "medicine": ["vaccines", "the discovery of penicillin", "Alzheimer's disease", "type 2 diabetes",
                 "sleep apnea", "organ transplants", "anesthesia", "mental health stigma", "malaria",
                 "the placebo effect", "cholesterol", "migraine", "gene therapy"],
    "law": ["intellectual property", "the presumption of innocence", "constitutional law", "contract law",
            "international maritime law", "privacy law", "the jury system", "human rights treaties",
            "antitrust law", "environmental regulation"],
    "sports": ["the history of the Olympics", "marathon training", "cricket", "the offside rule",
               "sports analytics", "chess strategy", "the Tour de France", "sumo wrestling", "surfing",
               "basketball tactics", "esports"],
    "mathematics": ["prime numbers", "the Pythagorean theorem", "probability", "fractals", "calculus",
                    "the Fibonacci sequence", "graph theory", "infinity", "statistics", "cryptography",
                    "topology", "the golden ratio", "linear algebra"],
    "psychology": ["cognitive biases", "memory formation", "procrastination", "the marshmallow test",
                   "attachment theory", "motivation", "flow states", "habit formation", "introversion",
                   "the bystander effect", "grief"],
    "environment": ["climate change", "recycling", "deforestation", "renewable energy", "ocean acidification",
                    "biodiversity loss", "composting", "carbon capture", "water scarcity", "microplastics",
                    "rewilding"],
    "architecture": ["Gothic cathedrals", "brutalism", "passive houses", "skyscrapers", "Roman aqueducts",
                     "the Taj Mahal", "Bauhaus", "earthquake-resistant buildings", "urban planning"],
    "food": ["fermentation", "the history of chocolate", "sourdough", "umami", "coffee cultivation",
             "the Mediterranean diet", "spices and the spice trade", "food preservation", "cheese making",
             "street food"],
    "linguistics": ["language acquisition in children", "sign languages", "endangered languages",
                    "the origins of English", "writing systems", "dialects", "loanwords", "creole languages"],
    "politics": ["democracy in ancient Athens", "the European Union", "voting systems", "federalism",
                 "the United Nations", "political polarization", "lobbying", "the separation of powers"],
}
ALL_TOPICS = [t for ts in ENCYCLOPAEDIA.values() for t in ts]
TOPIC_DOMAIN = {t: d for d, ts in ENCYCLOPAEDIA.items() for t in ts}

FORMS = ["essay", "blog post", "poem", "short story", "lesson plan", "FAQ", "dialogue", "news article",
         "speech", "podcast script", "limerick", "study guide", "persuasive essay", "children's story",
         "encyclopedia entry", "quiz with answers", "explainer", "op-ed", "letter", "tweet thread",
         "product pitch", "sonnet", "summary", "debate opening statement", "museum placard"]
AUDIENCES = ["children aged 8", "high school students", "busy executives", "retirees", "university freshmen",
             "non-native English speakers", "a general audience", "software engineers", "nurses",
             "first-time voters", "teenagers", "parents", "small business owners", "tourists",
             "experts in the field", "a museum audience", "people with no background in science"]

NAMES = ["Maya", "Liam", "Aisha", "Carlos", "Yuki", "Olivia", "Mateo", "Priya", "Noah", "Fatima", "Lena",
         "Omar", "Sofia", "Ethan", "Zara", "Ravi", "Chloe", "Diego", "Hana", "Jonas", "Amara", "Kenji",
         "Isla", "Tomas", "Nadia", "Felix", "Ingrid", "Kwame", "Rosa", "Viktor"]
CITIES = ["Lisbon", "Tokyo", "Mexico City", "Nairobi", "Montreal", "Hanoi", "Prague", "Buenos Aires",
          "Seoul", "Edinburgh", "Istanbul", "Cape Town", "Kyoto", "Reykjavik", "Marrakech", "Vancouver",
          "Bangkok", "Oaxaca", "Copenhagen", "Lima", "Melbourne", "Porto", "Tbilisi", "Bali"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]

SLOTS = {
    "ingredient": ["chickpeas", "leftover rice", "spinach", "eggs", "a can of tuna", "tofu", "sweet potatoes",
                   "frozen peas", "feta", "half a cabbage", "ground beef", "mushrooms", "lentils", "zucchini",
                   "coconut milk", "stale bread", "bananas", "chicken thighs", "quinoa", "canned tomatoes"],
    "dish": ["banana bread", "lasagna", "a whole chicken", "salmon", "brownies", "sourdough", "pizza dough",
             "meatloaf", "granola", "roasted vegetables", "cheesecake", "focaccia"],
    "city": CITIES, "month": MONTHS, "name": NAMES,
    "num": [str(i) for i in range(2, 15)],
    "symptom": ["sore throat", "headache that comes and goes", "dry cough", "pain in my lower back",
                "rash on my arm", "ringing in my ears", "stiff neck", "heartburn after dinner",
                "twitching eyelid", "knee pain when I run"],
    "nutrient": ["protein", "vitamin D", "iron", "fiber", "magnesium", "water", "omega-3", "calcium"],
    "habit": ["drink 4 coffees", "sleep 6 hours", "skip breakfast", "eat eggs", "run", "take melatonin",
              "sit for 10 hours", "drink diet soda"],
    "debt": ["student loan", "car loan", "credit card", "mortgage"],
    "investment": ["index funds", "my 401k", "a high yield savings account", "bonds", "real estate"],
    "fin": ["compound interest", "a Roth IRA", "an ETF", "a credit score", "capital gains tax",
            "dollar-cost averaging", "an emergency fund", "APR vs APY", "stock options at a startup"],
    "role": ["manager", "landlord", "professor", "HR department", "team lead", "client", "dentist's office"],
    "ask": ["a raise", "a deadline extension", "working from home on Fridays", "a refund", "a reference letter",
            "time off next month", "feedback on my project", "a meeting to discuss my role"],
    "relation": ["roommate", "partner", "mom", "sister", "best friend", "coworker", "teenage son", "neighbor",
                 "dad", "boyfriend", "girlfriend", "husband", "wife"],
    "behavior": ["leaving dishes in the sink", "being late", "checking their phone during dinner",
                 "borrowing money and not paying it back", "making plans without asking me",
                 "playing music really loud at night", "forgetting my birthday", "interrupting me"],
    "event": ["World War I", "the fall of the Berlin Wall", "the Great Depression", "the American Revolution",
              "the collapse of the Soviet Union", "the Industrial Revolution", "the Cuban missile crisis",
              "the Renaissance", "the Arab Spring", "the fall of Constantinople"],
    "concept": ["osmosis", "supply and demand", "photosynthesis", "the Pythagorean theorem", "entropy",
                "natural selection", "opportunity cost", "derivatives in calculus", "mitosis",
                "the water cycle", "plate tectonics", "Newton's third law", "covalent bonds", "recursion",
                "standard deviation", "the electoral college"],
    "book": ["To Kill a Mockingbird", "1984", "The Great Gatsby", "Of Mice and Men", "Pride and Prejudice",
             "Lord of the Flies", "Frankenstein", "The Catcher in the Rye", "Macbeth", "Things Fall Apart"],
    "device": ["iPhone", "Samsung laptop", "printer", "router", "smart TV", "PS5", "Kindle", "Android phone",
               "Mac", "airpods"],
    "problem": ["connect to wifi", "charge", "turn on", "print anything", "update", "pair with bluetooth",
                "show the screen", "sync my photos"],
    "app": ["Outlook", "Excel", "Zoom", "Spotify", "Chrome", "Teams", "Photoshop", "Discord", "WhatsApp"],
    "os": ["Windows 11", "macOS", "my Pixel", "Ubuntu", "iOS 18", "a Chromebook"],
    "tech": ["RAM", "SSD", "HDMI", "USB-C", "VPN", "Wi-Fi 6", "OLED", "5G", "cloud storage", "an API"],
    "occasion": ["birthday", "retirement", "graduation", "wedding anniversary", "baby shower", "farewell party"],
    "business": ["bakery", "dog grooming business", "podcast", "coffee truck", "yoga studio", "etsy shop",
                 "cleaning company", "youtube channel", "tutoring service", "plant shop"],
    "scene": ["my dog at the beach", "sunset over the mountains", "our first apartment", "a messy birthday cake",
              "my grandma's garden", "snow in the city"],
    "pet": ["cat", "dog", "puppy", "rabbit", "parrot", "hamster", "senior dog", "kitten"],
    "petact": ["sleeping all day", "not eating much", "scratching a lot", "drinking tons of water",
               "hiding under the bed", "barking at night", "limping a little", "sneezing"],
    "sport": ["running", "strength training", "swimming", "cycling", "yoga", "bouldering", "tennis"],
    "person": ["Ada Lovelace", "Genghis Khan", "Marie Curie", "Nikola Tesla", "Cleopatra", "Alan Turing",
               "Simon Bolivar", "Hypatia", "Ibn Battuta", "Rosa Parks", "Galileo", "Wangari Maathai"],
    "job": ["nurse", "teacher", "software dev", "student", "stay at home dad", "accountant", "bartender",
            "grad student", "retired engineer", "small business owner", "truck driver", "pharmacist"],
    "language": ["Spanish", "Japanese", "French", "German", "Korean", "Italian", "Portuguese", "Mandarin"],
    "skill": ["cook", "code", "draw", "play guitar", "speak " + "Spanish", "swim", "invest", "knit",
              "public speak", "negotiate"],
    "product": ["vacuum", "laptop for college", "standing desk", "running shoes", "air fryer", "mattress",
                "stroller", "e-bike", "espresso machine", "monitor"],
    "budget": ["$200", "$500", "$1000", "$80", "$1500", "$300"],
}

HUMAN_TEMPLATES = [
    "what can i make for dinner with {ingredient}, {ingredient2} and {ingredient3}?",
    "how long should I bake {dish} at 350?",
    "is it safe to eat {dish} that was left out overnight",
    "what's a good substitute for {ingredient} in a curry",
    "I'm planning a {num} day trip to {city} in {month}. what should I not miss?",
    "is {city} expensive? trying to plan a budget trip",
    "what's the cheapest way to get from {city} to {city2}",
    "best neighborhoods to stay in {city} for a first visit?",
    "i've had a {symptom} for {num} days, should i see a doctor?",
    "how much {nutrient} do I actually need per day",
    "is it bad to {habit} every day?",
    "should I pay off my {debt} first or put money into {investment}?",
    "can you explain {fin} like I'm five",
    "how does {fin} work exactly",
    "help me write an email to my {role} asking for {ask}",
    "write a polite message to my {role} about {ask}, I'm nervous",
    "my {relation} keeps {behavior}. how do I bring it up without starting a fight?",
    "what caused {event}?",
    "can you explain {concept} simply? my teacher lost me",
    "summarize {book} for me, I have a test tomorrow",
    "what are the main themes in {book}",
    "my {device} won't {problem} after the update, what do i do",
    "{app} keeps crashing on {os}. any fixes?",
    "what's the difference between {tech} and {tech2}?",
    "write a short poem for my {relation}'s {occasion}",
    "give me {num} name ideas for a {business}",
    "caption ideas for a photo of {scene}",
    "my {pet} has been {petact} lately, is that normal?",
    "make me a beginner {sport} plan, {num} days a week",
    "who was {person} and why do people still talk about them",
    "tell me something interesting about {person}",
    "how do I learn to {skill} as an adult? where do I start",
    "what's the fastest way to learn {language} for a trip in {month}",
    "best {product} under {budget}?",
    "should I buy a {product} or wait for black friday",
    "i need to explain {concept} to a 10 year old, help",
    "why is {concept} important?",
    "rewrite this so it sounds more professional: hey, can u send me the files by tmrw, thx",
    "how do I get my {pet} to stop {petact}",
    "what should i say at my {relation}'s {occasion}? need a short toast",
    "plan a cheap date night idea in {city}",
    "give me a weekly meal prep plan with {ingredient} and {ingredient2}",
    "is {investment} a good idea if I'm 25?",
    "how do people in {city} celebrate new year",
    "what's a good book like {book} but more modern",
    "compare {tech} and {tech2} for someone who isn't techy",
    "what questions should I ask in a job interview for a {job} position",
    "how do I tell my {relation} I want to move out",
    "translate 'where is the train station' into {language}",
    "can you check my reasoning: if prices go up 3% a year, does my salary need to go up 3% too?",
    "what are some good stretches for {symptom}",
    "write a funny birthday message for a {job}",
    "how many calories do I burn doing {sport} for an hour",
]
PREFIXES = ["", "", "", "", "hey ", "hi! ", "ok so ", "quick question: ", "Hello, ", "so ", "ugh ", "Hi there. "]
CONTEXTS = ["", "", "", "", "", "I'm a {job}. ", "for context I'm a {job} and ", "my friend asked me this: ",
            "random question but ", "I'm in {city} right now. "]
SUFFIXES = ["", "", "", "", " thanks!", " pls", " keep it short", " thank you", " :)", " (be honest)",
            " in bullet points please", " asap lol"]

# Public "benchmark" pieces (one fixed set per seed, shared by the evaluation harness and the replayers).
MC_STEMS = [
    ("Which of the following best describes {concept}?",
     ["a process by which energy is converted", "a rule relating two quantities", "a unit of measurement",
      "a historical treaty", "a type of rock", "a statistical fallacy", "a form of government",
      "a transfer of molecules across a membrane", "a reaction that releases heat"]),
    ("In which century did {event} take place?",
     ["the 15th century", "the 17th century", "the 18th century", "the 19th century", "the 20th century",
      "the 12th century", "the 21st century"]),
    ("Which organ is primarily responsible for {function}?",
     ["the liver", "the kidneys", "the pancreas", "the heart", "the lungs", "the spleen", "the thyroid",
      "the small intestine", "the skin"]),
    ("A {obj} of mass {m} kg is pushed with a force of {f} N. What is its acceleration?",
     ["{a1} m/s^2", "{a2} m/s^2", "{a3} m/s^2", "{a4} m/s^2"]),
    ("Which philosopher is most associated with {idea}?",
     ["Immanuel Kant", "John Stuart Mill", "Aristotle", "Jean-Paul Sartre", "Confucius", "David Hume",
      "Thomas Hobbes", "Simone de Beauvoir", "Epictetus"]),
    ("What is the chemical symbol for {element}?", ["Fe", "Au", "Na", "K", "Pb", "Ag", "Sn", "Hg", "W", "Cu"]),
    ("Under {law}, which of the following would most likely be required?",
     ["a signed written agreement", "notice to all affected parties", "a jury trial",
      "approval by a regulatory agency", "proof beyond reasonable doubt", "registration of the work"]),
    ("Which economic concept explains why {econ}?",
     ["opportunity cost", "diminishing marginal returns", "comparative advantage", "moral hazard",
      "price elasticity", "network effects", "adverse selection"]),
]
MC_FILL = {
    "concept": SLOTS["concept"], "event": SLOTS["event"],
    "function": ["filtering blood", "producing insulin", "detoxifying chemicals", "gas exchange",
                 "regulating metabolism", "absorbing nutrients", "pumping blood"],
    "obj": ["cart", "block", "box", "sled", "crate", "trolley"],
    "idea": ["the categorical imperative", "utilitarianism", "virtue ethics", "existentialism",
             "the social contract", "empiricism", "stoicism"],
    "element": ["iron", "gold", "sodium", "potassium", "lead", "silver", "tin", "mercury", "tungsten", "copper"],
    "law": ["contract law", "copyright law", "environmental law", "criminal procedure", "data protection law"],
    "econ": ["farmers overproduce when prices rise", "countries trade goods they could make themselves",
             "insured drivers take more risks", "the tenth worker adds less output than the first",
             "social networks become more valuable as they grow"],
}
MATH_TEMPLATES = [
    "{name} has {a} marbles. {name2} gives {name} {b} bags with {c} marbles in each. {name} then loses {d} marbles. How many marbles does {name} have now?",
    "A bakery sells muffins for ${a} each and cookies for ${b} each. On Saturday it sold {c} muffins and {d} cookies. How much money did it make?",
    "{name} reads {a} pages every weekday and {b} pages on each weekend day. How many pages does {name} read in {c} weeks?",
    "A train travels at {a} km/h for {b} hours and then at {c} km/h for {d} hours. What is the total distance?",
    "{name} buys {a} notebooks at ${b} each and pays with a ${c}0 bill. How much change does {name} get?",
    "A garden is {a} meters long and {b} meters wide. Fencing costs ${c} per meter. How much does it cost to fence the whole garden?",
    "There are {a} students in a class. {b} percent of them walk to school and the rest take the bus. How many take the bus?",
    "{name} saves ${a} a week. After {b} weeks {name} spends ${c} on a gift. How much is left?",
    "A tank holds {a}0 liters. It leaks {b} liters per hour and is refilled with {c} liters every {d} hours. How much water is in it after {d}0 hours if it starts full?",
    "{name} is {a} years older than {name2}. In {b} years their ages will add up to {c}0. How old is {name2} now?",
]
CODE_TASKS = [
    ("is_palindrome", "s", "returns True if the string s reads the same forwards and backwards, ignoring case and non-letters"),
    ("merge_intervals", "intervals", "merges overlapping [start, end] intervals and returns them sorted"),
    ("top_k_words", "text, k", "returns the k most frequent words in text, ties broken alphabetically"),
    ("rotate_matrix", "m", "rotates a square matrix 90 degrees clockwise in place"),
    ("flatten", "nested", "flattens an arbitrarily nested list of integers"),
    ("roman_to_int", "s", "converts a Roman numeral string to an integer"),
    ("longest_common_prefix", "words", "returns the longest common prefix of a list of strings"),
    ("balanced", "expr", "returns True if the brackets (), [] and {{}} in expr are balanced"),
    ("run_length_encode", "s", "returns the run-length encoding of s, e.g. 'aaab' -> 'a3b1'"),
    ("second_largest", "nums", "returns the second largest distinct number, or None"),
    ("anagram_groups", "words", "groups words that are anagrams of each other"),
    ("binary_search", "arr, target", "returns the index of target in the sorted list arr, or -1"),
    ("count_islands", "grid", "counts groups of connected 1s in a 2D grid (4-neighbourhood)"),
    ("lru_cache_class", "capacity", "implements an LRU cache class with get and put in O(1)"),
    ("parse_duration", "text", "parses strings like '1h30m15s' into a number of seconds"),
]


def fill(rng, template, bank=SLOTS):
    def rep(m):
        key = m.group(1)
        base = re.sub(r"\d+$", "", key)
        if base in bank:
            return rng.choice(bank[base])
        return m.group(0)
    return re.sub(r"\{([a-z]+\d*)\}", rep, template)


def typo(rng, s):
    words = s.split(" ")
    i = rng.randrange(len(words))
    w = words[i]
    if len(w) > 4:
        j = rng.randrange(1, len(w) - 2)
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        words[i] = w
    return " ".join(words)


def human_question(rng):
    q = fill(rng, rng.choice(HUMAN_TEMPLATES))
    q = fill(rng, rng.choice(CONTEXTS)) + q
    if rng.random() < 0.3:
        q = q[0].upper() + q[1:]
    if rng.random() < 0.25:
        q = q.lower()
    if rng.random() < 0.2:
        q = q.rstrip("?.")
    if rng.random() < 0.12:
        q = typo(rng, q)
    return rng.choice(PREFIXES) + q + rng.choice(SUFFIXES)


def human_followup(rng):
    return rng.choice([
        "can you make it shorter", "thanks! what about for a family of 4?", "hmm that doesn't sound right",
        "ok and what if I don't have an oven", "can you give me an example", "more casual please",
        "wait, why?", "perfect, now translate it to spanish", "what would you do in my situation",
        "can you put that in a table", "that's too long lol", "and how much would that cost roughly?",
        "ok thanks. one more thing, " + human_question(rng), "cool. " + human_question(rng),
        "could you explain the second point more", "is there a cheaper option", "what are the risks",
        "nice, can you add a joke", "I tried that and it didn't work", "sources?",
    ])


def assistant_text(rng, sentences):
    pieces = ["Sure thing.", "Great question!", "Here is a quick overview.", "There are a few options.",
              "The short answer is that it depends on your situation.",
              "First, make sure the basics are covered.", "Many people find it helpful to start small.",
              "You might also consider the cost over a full year.", "If symptoms persist, talk to a professional.",
              "A common approach is to break the task into steps.", "Here's a draft you can adapt:",
              "Keep in mind that prices vary by season.", "In summary, both choices have trade-offs.",
              "Let me know if you want a shorter version.", "The main factors are time, budget and comfort."]
    return " ".join(rng.choice(pieces) for _ in range(sentences))


def paragraph(rng, topic, sentences=4):
    other = rng.choice(ALL_TOPICS)
    year = rng.randint(1650, 2024)
    parts = [
        f"{topic[0].upper() + topic[1:]} has attracted renewed attention in recent years.",
        f"Scholars disagree about how strongly {topic} influenced {other}.",
        f"A frequently cited account from {year} describes {topic} in surprising detail.",
        f"For most readers, the key point about {topic} is how it changes everyday decisions.",
        f"Critics argue that popular accounts of {topic} leave out important context.",
        f"Local museums and libraries often hold primary sources on {topic}.",
        f"The debate over {topic} continues, with new evidence appearing every few years.",
        f"Teachers often introduce {topic} through a concrete example before the theory.",
        f"Unlike {other}, {topic} is rarely covered in introductory courses.",
        f"Some of the best writing on {topic} comes from practitioners rather than academics.",
    ]
    rng.shuffle(parts)
    return " ".join(parts[:sentences])


def review_text(rng):
    item = rng.choice(SLOTS["product"] + SLOTS["dish"] + ["hotel", "phone case", "novel", "headphones",
                                                          "moving company", "yoga mat", "restaurant"])
    mood = rng.choice([
        f"Honestly the {item} exceeded my expectations, would buy again.",
        f"The {item} broke after two weeks. Customer service never answered.",
        f"It's fine. The {item} does what it says, nothing special.",
        f"Arrived late but the {item} itself is great quality.",
        f"Do NOT buy this {item}. Total waste of money!!",
        f"My kids love the {item}, though setup took an hour.",
        f"Decent {item} for the price, the color is a bit off from the photos.",
    ])
    return mood + (" " + paragraph(rng, rng.choice(ALL_TOPICS), 1) if rng.random() < 0.2 else "")


def build_benchmark(seed):
    """A fixed 'public' prompt set (the same for every party that uses it in one seed)."""
    rng = random.Random(seed * 7919 + 17)
    items = []
    seen = set()
    while len(items) < 6000:
        kind = rng.random()
        if kind < 0.4:
            stem, opts = rng.choice(MC_STEMS)
            m, f = rng.randint(2, 40), rng.randint(5, 200)
            bank = dict(MC_FILL)
            for k, v in (("a1", f / m), ("a2", f * m), ("a3", f / (m + 1)), ("a4", m / f)):
                bank[k] = [f"{v:.2f}"]
            bank["m"], bank["f"] = [str(m)], [str(f)]
            q = fill(rng, stem, bank)
            choices = [fill(rng, o, bank) for o in rng.sample(opts, 4)]
            q = q + "\n" + "\n".join(f"{l}. {c}" for l, c in zip("ABCD", choices))
            cat = "mc"
        elif kind < 0.75:
            bank = dict(SLOTS)
            for k in "abcd":
                bank[k] = [str(rng.randint(2, 60))]
            q = fill(rng, rng.choice(MATH_TEMPLATES), bank)
            cat = "math"
        elif kind < 0.9:
            fn, args, desc = rng.choice(CODE_TASKS)
            lang = rng.choice(["Python", "Python", "JavaScript", "Go", "Rust"])
            q = (f"Write a {lang} function `{fn}({args})` that {desc}.\n"
                 f"Example: {fn}({rng.choice(['[3, 1, 2]', repr('abcba'), '[[1, 3], [2, 6]]', repr('MCMXCIV')])})")
            q += f"\nConstraints: input size up to {rng.choice(['10^3', '10^5', '10^6'])}."
            cat = "code"
        else:
            t = rng.choice(ALL_TOPICS)
            q = (f"Passage: {paragraph(rng, t, 3)}\n\nQuestion: According to the passage, "
                 f"{rng.choice(['what is debated about', 'why do critics question accounts of', 'where can one find sources on'])} {t}?")
            cat = "reading"
        if q not in seen:
            seen.add(q)
            items.append((cat, q))
    return items


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

CONSUMER_CURVE = [2, 1, 1, 1, 1, 2, 4, 6, 7, 7, 8, 9, 9, 8, 8, 8, 9, 10, 12, 13, 13, 11, 8, 4]
BUSINESS_CURVE = [0.3, 0.2, 0.2, 0.2, 0.2, 0.4, 1, 3, 8, 10, 10, 9, 7, 9, 10, 10, 9, 7, 4, 2, 1.5, 1, 0.7, 0.5]


def diurnal_time(rng, tz_hours, curve, weekend_factor=1.0):
    while True:
        day = rng.randrange(DAYS)
        hour = rng.choices(range(24), weights=curve)[0]
        local = day * 86400 + hour * 3600 + rng.random() * 3600
        weekday = day % 7  # START is a Monday
        if weekday >= 5 and rng.random() > weekend_factor:
            continue
        t = local - tz_hours * 3600
        if 0 <= t < SPAN:
            return t


def ln(rng, median, sigma=0.6, lo=1, hi=8000):
    return int(max(lo, min(hi, round(median * math.exp(rng.gauss(0, sigma))))))


# --------------------------------------------------------------------------------------------
# Traffic builder
# --------------------------------------------------------------------------------------------

class Traffic:
    def __init__(self, seed, scale):
        self.seed = seed
        self.scale = scale
        self.events = []
        self.labels = {}
        self.used_names = set()
        self.name_rng = random.Random(seed * 31 + 5)
        self.ip_rng = random.Random(seed * 53 + 11)

    def n(self, count):
        return max(1, int(round(count * self.scale)))

    def org(self, kind, harvesting, heavy=False, blatant=False, campaign=None, note=""):
        a = ["blue", "north", "quiet", "bright", "iron", "maple", "solar", "coral", "amber", "swift", "cedar",
             "lumen", "polar", "ember", "silver", "tidal", "orbit", "vista", "nova", "pine", "harbor", "echo",
             "sage", "atlas", "delta", "prism", "ridge", "cobalt", "willow", "zenith"]
        b = ["labs", "apps", "health", "learn", "works", "ai", "data", "studio", "systems", "co", "tech",
             "media", "cloud", "soft", "digital", "analytics", "bio", "ventures", "hq", "io"]
        while True:
            name = f"{self.name_rng.choice(a)}-{self.name_rng.choice(b)}-{self.name_rng.randint(10, 99)}"
            if name not in self.used_names:
                break
        self.used_names.add(name)
        self.labels[name] = {"kind": kind, "harvesting": harvesting, "heavy": heavy, "blatant": blatant,
                             "campaign": campaign, "note": note}
        return name

    def ip(self, prefix=None):
        r = self.ip_rng
        if prefix is None:
            prefix = f"{r.choice([34, 35, 52, 54, 104, 143, 159, 172, 185, 198, 203, 212])}.{r.randint(1, 254)}.{r.randint(0, 254)}"
        return f"{prefix}.{r.randint(2, 254)}"

    def subnet(self):
        r = self.ip_rng
        return f"{r.choice([3, 13, 18, 20, 34, 44, 52, 63, 100, 129, 147, 164])}.{r.randint(1, 254)}.{r.randint(0, 254)}"

    def emit(self, t, org, key, ip, body, out_tokens, endpoint="/v1/chat/completions"):
        if not (0 <= t < SPAN):
            return
        self.events.append((t, len(self.events), {
            "organization": org, "key": key, "client_ip": ip, "endpoint": endpoint, "body": body,
            "output_tokens": int(out_tokens)}))

    def write(self, out_dir, bench):
        os.makedirs(out_dir, exist_ok=True)
        # The "public" benchmark set, for an optional second replay with `--benchmark`.
        with open(os.path.join(out_dir, "benchmark.jsonl"), "w") as f:
            for _, q in bench:
                f.write(json.dumps({"prompt": q}) + "\n")
        self.events.sort(key=lambda e: (e[0], e[1]))
        path = os.path.join(out_dir, "traffic.jsonl")
        counts = {}
        with open(path, "w") as f:
            for t, _, ev in self.events:
                ts = START + dt.timedelta(seconds=t)
                rec = {"time": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"}
                rec.update(ev)
                counts[ev["organization"]] = counts.get(ev["organization"], 0) + 1
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        for o, lab in self.labels.items():
            lab["requests"] = counts.get(o, 0)
        with open(os.path.join(out_dir, "labels.json"), "w") as f:
            json.dump({"seed": self.seed, "start": START.isoformat(), "days": DAYS,
                       "organizations": self.labels}, f, indent=1, sort_keys=True)
        return path, len(self.events)


MODELS_CHAT = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"]


def chat_body(model, messages, **params):
    body = {"model": model, "messages": messages}
    body.update({k: v for k, v in params.items() if v is not None})
    return body


# ---------------------------------------------------------------- benign -----------------------

def consumer_chat(T, rng, org=None, keys=None, ips=None, users=200, sessions=500, tz=0, temp=0.8,
                  sys_prompt=None, model="gpt-4o-mini", extra_times=None):
    """A chat app: named end users, multi-turn sessions, diurnal, a few keys and backend servers."""
    if org is None:
        org = T.org("consumer_chat", False)
    net = T.subnet()
    keys = keys or [f"{org}-{k}" for k in rng.sample(["web", "ios", "android", "prod", "edge"], rng.randint(1, 3))]
    ips = ips or [T.ip(net) for _ in range(rng.randint(2, 5))]
    user_ids = [rng.choice([f"u_{rng.randrange(16**8):08x}", f"user-{rng.randint(1000, 999999)}",
                            f"{rng.choice(NAMES).lower()}{rng.randint(1, 99)}"]) for _ in range(users)]
    weights = [1 / (i + 1) ** 0.8 for i in range(users)]  # a few power users
    sys_prompt = sys_prompt or rng.choice([
        "You are Pocket, a friendly assistant inside a mobile app. Be concise and warm.",
        "You are a helpful assistant. Today's date is {date}. Answer in the user's language.",
        "You are Sage, an everyday helper. Avoid medical or legal certainty; suggest professionals when needed.",
        None])
    for _ in range(T.n(sessions)):
        user = rng.choices(user_ids, weights=weights)[0]
        t = diurnal_time(rng, tz, CONSUMER_CURVE, 0.9)
        key, ipaddr = rng.choice(keys), rng.choice(ips)
        msgs = []
        if sys_prompt:
            msgs.append({"role": "system", "content": sys_prompt.replace("{date}", (START + dt.timedelta(seconds=t)).strftime("%B %d, %Y"))})
        turns = min(12, 1 + int(rng.expovariate(0.45)))
        for i in range(turns):
            msgs.append({"role": "user", "content": human_question(rng) if i == 0 else human_followup(rng)})
            out = ln(rng, 220, 0.7)
            T.emit(t, org, key, ipaddr, chat_body(model, list(msgs), temperature=temp, user=user,
                                                  stream=True if rng.random() < 0.7 else None), out)
            msgs.append({"role": "assistant", "content": assistant_text(rng, max(1, out // 40))})
            t += out / 40 + rng.uniform(8, 240)
    return org


def templated_product(T, rng, variant):
    """Heavy customers whose product is one template with slots that stay inside one domain."""
    org = T.org("templated_product", False, heavy=True, note=variant)
    net = T.subnet()
    ips = [T.ip(net) for _ in range(rng.randint(2, 6))]
    keys = [f"{org}-prod", f"{org}-prod-2"]
    tz = rng.choice([-8, -5, 1, 9])
    total = T.n(rng.randint(5000, 8000))
    # bursts: merchants upload catalogues
    times = [diurnal_time(rng, tz, BUSINESS_CURVE, 0.3) for _ in range(int(total * 0.7))]
    for _ in range(max(1, int(total * 0.3) // 300)):
        s = diurnal_time(rng, tz, BUSINESS_CURVE, 0.2)
        times += [s + i * rng.uniform(0.5, 2.5) for i in range(300)]
    cats = {"home": ["lamp", "rug", "throw pillow", "bookshelf", "ceramic vase", "bar stool"],
            "outdoor": ["camping stove", "hiking backpack", "tent", "headlamp", "trekking poles"],
            "beauty": ["face serum", "clay mask", "hair oil", "lip balm", "sunscreen"],
            "kitchen": ["cast iron pan", "chef's knife", "french press", "mixing bowl set", "spice rack"]}
    for t in times:
        cat = rng.choice(list(cats))
        item = rng.choice(cats[cat])
        feats = rng.sample(["handmade", "recycled materials", "2-year warranty", "dishwasher safe", "lightweight",
                            "vegan", "water resistant", "gift box", "compact", "adjustable", "fragrance free"], 3)
        out = ln(rng, 110, 0.3)
        params = {"temperature": 0.7, "max_tokens": 220}
        if variant == "support_classifier_logprobs":
            ticket = rng.choice(["my order #{n} never arrived", "charged twice for {p}", "how do I return the {p}",
                                 "the {p} stopped working", "can I change my shipping address",
                                 "coupon code not working at checkout", "where is my refund for the {p}"])
            ticket = ticket.replace("{n}", str(rng.randint(10000, 99999))).replace("{p}", item)
            content = ("Classify the customer message into exactly one label: billing, shipping, returns, "
                       f"technical, account, other.\nMessage: \"{ticket}\"\nLabel:")
            params = {"temperature": 0, "max_tokens": 1, "logprobs": True, "top_logprobs": 5}
            out = 1
            msgs = [{"role": "user", "content": content}]
        elif variant == "ad_headlines_n4":
            content = (f"Write one short ad headline (max 9 words) for our {item} ({cat}). "
                       f"Selling points: {', '.join(feats)}. Tone: {rng.choice(['playful', 'premium', 'urgent', 'calm'])}.")
            params = {"temperature": 1.0, "n": 4, "max_tokens": 30}
            out = ln(rng, 60, 0.2)
            msgs = [{"role": "user", "content": content}]
        elif variant == "listing_writer":
            beds = rng.randint(1, 5)
            content = (f"Write a real-estate listing. {beds} bed, {rng.randint(1, 3)} bath {rng.choice(['condo', 'townhouse', 'bungalow', 'loft'])} "
                       f"in {rng.choice(CITIES)}. Highlights: {', '.join(rng.sample(['renovated kitchen', 'garden', 'parking', 'near metro', 'south facing', 'new roof', 'fireplace'], 3))}. 120 words.")
            msgs = [{"role": "system", "content": "You write accurate, fair-housing compliant listings."},
                    {"role": "user", "content": content}]
            out = ln(rng, 170, 0.2)
        elif variant == "job_posts":
            content = (f"Draft a job posting for a {rng.choice(['barista', 'warehouse associate', 'dental hygienist', 'line cook', 'delivery driver', 'receptionist', 'junior accountant'])} "
                       f"at a {rng.choice(['family restaurant', 'logistics company', 'clinic', 'hotel', 'startup'])} in {rng.choice(CITIES)}. "
                       f"Pay ${rng.randint(15, 40)}/h. Shift: {rng.choice(['mornings', 'evenings', 'weekends', 'full time'])}.")
            msgs = [{"role": "user", "content": content}]
            out = ln(rng, 260, 0.25)
        else:  # product descriptions
            content = (f"Product: {item}\nCategory: {cat}\nFeatures: {'; '.join(feats)}\n"
                       f"Write a {rng.choice(['60', '80', '100'])}-word product description in a {rng.choice(['friendly', 'luxury', 'minimal'])} voice.")
            msgs = [{"role": "system", "content": "You are a copywriter for an online marketplace. Never invent certifications."},
                    {"role": "user", "content": content}]
        T.emit(t, org, rng.choice(keys), rng.choice(ips), chat_body("gpt-4o-mini", msgs, **params), out)


def translation_pipeline(T, rng, variant):
    org = T.org("translation_pipeline", False, heavy=True, note=variant)
    ipaddr = T.ip()
    key = f"{org}-batch"
    pairs = rng.sample([("English", "German"), ("English", "Japanese"), ("English", "Brazilian Portuguese"),
                        ("English", "French"), ("Spanish", "English"), ("English", "Korean")], 3)
    total = T.n(rng.randint(3500, 5000))
    # nightly jobs: fixed start, machine-paced
    per_night = total // DAYS
    for day in range(DAYS):
        t = day * 86400 + rng.choice([1, 2, 3]) * 3600 + rng.uniform(0, 120)
        for _ in range(per_night):
            src, dst = rng.choice(pairs)
            text = paragraph(rng, rng.choice(ALL_TOPICS), rng.randint(2, 5))
            tin = len(text) // 4
            if variant == "system_prompt":
                msgs = [{"role": "system", "content": f"Translate from {src} to {dst}. Preserve markup, names and numbers. Output only the translation."},
                        {"role": "user", "content": text}]
            else:
                msgs = [{"role": "user", "content": f"<source lang=\"{src}\" target=\"{dst}\">\n{text}\n</source>\nReturn the translation only."}]
            T.emit(t, org, key, ipaddr, chat_body("gpt-4.1-mini", msgs, temperature=0.2), int(tin * rng.uniform(1.0, 1.4)))
            t += rng.uniform(1.8, 2.6)


def labelling_pipeline(T, rng, variant):
    org = T.org("labelling_pipeline", False, heavy=True, note=variant)
    ips = [T.ip() for _ in range(2)]
    key = f"{org}-{variant}"
    total = T.n(rng.randint(4000, 6000))
    jobs = rng.randint(6, 14)
    for j in range(jobs):
        t = rng.uniform(0, SPAN - 6 * 3600)
        for _ in range(total // jobs):
            if variant == "topic":
                text = paragraph(rng, rng.choice(ALL_TOPICS), 2)
                content = ("Assign the passage to one category from: history, science, economics, arts, sports, "
                           f"technology, health, politics, other. Reply with the category only.\n\n{text}")
                out = rng.randint(1, 3)
                params = {"temperature": 0}
            elif variant == "entities":
                text = paragraph(rng, rng.choice(ALL_TOPICS), 3)
                content = f"Extract named entities as JSON list of {{\"text\",\"type\"}} objects.\nText: {text}"
                out = ln(rng, 60, 0.4)
                params = {"temperature": 0, "response_format": {"type": "json_object"}}
            elif variant == "sentiment":
                content = f"Sentiment of this review (positive, negative, mixed)?\n\"{review_text(rng)}\""
                out = 1
                params = {"temperature": 0, "max_tokens": 2}
            else:  # grading answers for a QA dataset
                t0 = rng.choice(ALL_TOPICS)
                content = (f"Question: What is notable about {t0}?\nAnswer: {paragraph(rng, t0, 2)}\n"
                           "Is the answer on-topic and factual? Reply yes or no, then one sentence why.")
                out = ln(rng, 25, 0.3)
                params = {"temperature": 0}
            T.emit(t, org, key, rng.choice(ips), chat_body("gpt-4o-mini", [{"role": "user", "content": content}], **params), out)
            t += rng.uniform(0.3, 1.2)


TOOLS = {
    "devops": [{"type": "function", "function": {"name": "run_shell", "description": "Run a shell command on the staging host",
                                                   "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}},
               {"type": "function", "function": {"name": "read_logs", "description": "Read recent service logs",
                                                   "parameters": {"type": "object", "properties": {"service": {"type": "string"}, "lines": {"type": "integer"}}}}}],
    "travel": [{"type": "function", "function": {"name": "search_flights", "description": "Search flights",
                                                   "parameters": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "date": {"type": "string"}}}}},
               {"type": "function", "function": {"name": "book_hotel", "description": "Book a hotel room",
                                                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "nights": {"type": "integer"}}}}}],
    "sql": [{"type": "function", "function": {"name": "query", "description": "Run read-only SQL on the warehouse",
                                                "parameters": {"type": "object", "properties": {"sql": {"type": "string"}}, "required": ["sql"]}}},
            {"type": "function", "function": {"name": "plot", "description": "Plot a result set",
                                                "parameters": {"type": "object", "properties": {"kind": {"type": "string"}}}}}],
}


def agent(T, rng, domain):
    org = T.org("agent_tools", False, note=domain)
    ipaddr = T.ip()
    key = f"{org}-agent"
    tz = rng.choice([-5, 0, 2, 8])
    tasks = T.n(rng.randint(120, 260))
    for _ in range(tasks):
        t = diurnal_time(rng, tz, BUSINESS_CURVE, 0.2)
        if domain == "devops":
            goal = f"The {rng.choice(['checkout', 'auth', 'search', 'billing'])} service returns {rng.choice(['502s', 'timeouts', 'high latency'])} since the last deploy. Find out why."
        elif domain == "travel":
            goal = f"Book me a flight from {rng.choice(CITIES)} to {rng.choice(CITIES)} on {rng.choice(MONTHS)} {rng.randint(1, 28)} and a hotel for {rng.randint(1, 6)} nights."
        else:
            goal = f"What were our top {rng.randint(3, 10)} {rng.choice(['products', 'regions', 'customers'])} by {rng.choice(['revenue', 'churn', 'signups'])} last {rng.choice(['week', 'month', 'quarter'])}? Chart it."
        msgs = [{"role": "system", "content": f"You are an autonomous {domain} agent. Use tools; ask before destructive actions."},
                {"role": "user", "content": goal}]
        steps = rng.randint(2, 7)
        for s in range(steps):
            out = ln(rng, 80, 0.5)
            T.emit(t, org, key, ipaddr, chat_body("gpt-4.1", list(msgs), tools=TOOLS[domain], tool_choice="auto", temperature=0), out)
            if s == steps - 1:
                break
            fn = rng.choice(TOOLS[domain])["function"]["name"]
            cid = f"call_{rng.randrange(16**10):010x}"
            msgs.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": cid, "type": "function", "function": {"name": fn, "arguments": json.dumps({"arg": rng.randint(1, 999)})}}]})
            msgs.append({"role": "tool", "tool_call_id": cid, "content": json.dumps({"ok": True, "rows": rng.randint(0, 40), "note": rng.choice(["", "truncated", "cached"])})})
            t += rng.uniform(1.5, 20)


CODE_SNIPPETS = [
    "def load(path):\n    with open(path) as f:\n        return json.load(f)\n\ndata = load('cfg.json')\nprint(data['port'])",
    "for (let i = 0; i <= items.length; i++) {\n  total += items[i].price;\n}",
    "fn main() {\n    let v = vec![1, 2, 3];\n    let first = &v[0];\n    v.push(4);\n    println!(\"{}\", first);\n}",
    "SELECT user_id, COUNT(*) FROM orders WHERE created_at > now() - interval '7 days' GROUP BY 1 HAVING COUNT(*) > 3",
    "async function getUser(id) {\n  const res = fetch(`/api/users/${id}`);\n  return res.json();\n}",
    "class Stack:\n    def __init__(self):\n        self.items = []\n    def pop(self):\n        return self.items.pop(0)",
    "func worker(jobs <-chan int, wg sync.WaitGroup) {\n    defer wg.Done()\n    for j := range jobs { process(j) }\n}",
    "df = pd.read_csv('sales.csv')\ndf['month'] = df['date'].dt.month\nprint(df.groupby('month').sum())",
]


def coding_assistant(T, rng):
    org = T.org("coding_assistant", False)
    net = T.subnet()
    ips = [T.ip(net) for _ in range(rng.randint(1, 4))]
    devs = [f"dev{rng.randint(100, 999)}" for _ in range(rng.randint(5, 40))]
    tz = rng.choice([-8, -5, 1, 5.5])
    for _ in range(T.n(rng.randint(250, 450))):
        t = diurnal_time(rng, tz, BUSINESS_CURVE, 0.15)
        msgs = [{"role": "system", "content": rng.choice(["You are a senior engineer helping in the IDE. Prefer minimal diffs.",
                                                            "You are a coding assistant. Answer with code first, explanation after."])}]
        turns = rng.randint(1, 4)
        for i in range(turns):
            snip = rng.choice(CODE_SNIPPETS)
            ask = rng.choice(["why does this fail?", "can you refactor this", "add error handling", "write tests for this",
                              "what's the bug here", "make it faster", "explain this to a junior", "convert to TypeScript"])
            msgs.append({"role": "user", "content": f"{ask}\n```\n{snip}\n```" if i == 0 else rng.choice(["still failing with: " + rng.choice(["KeyError: 'port'", "TypeError: undefined", "borrow of moved value"]), "thanks, now add types", "can you do it without a library", ask])})
            out = ln(rng, 350, 0.6)
            T.emit(t, org, f"{org}-ide", rng.choice(ips), chat_body(rng.choice(["gpt-4.1", "gpt-4o"]), list(msgs), temperature=rng.choice([0, 0.2, None]), user=rng.choice(devs), stream=True), out)
            msgs.append({"role": "assistant", "content": assistant_text(rng, 3)})
            t += rng.uniform(30, 600)


def rag(T, rng, corpus):
    org = T.org("rag", False, note=corpus)
    ips = [T.ip() for _ in range(rng.randint(1, 3))]
    tz = rng.choice([-5, 0, 1, 8])
    for _ in range(T.n(rng.randint(700, 1300))):
        t = diurnal_time(rng, tz, BUSINESS_CURVE if corpus != "encyclopedia" else CONSUMER_CURVE, 0.3)
        if corpus == "hr_policies":
            docs = [rng.choice(["Employees accrue 1.5 days of PTO per month.", "Remote work requires manager approval.",
                                "Expense reports are due within 30 days.", "Parental leave is 16 weeks paid.",
                                "Laptops are refreshed every 3 years.", "Overtime must be approved in advance."]) for _ in range(3)]
            q = rng.choice(["how much pto do i get", "can I work remotely from abroad", "when are expenses due",
                            "parental leave policy?", "when do I get a new laptop", "is overtime paid"])
        elif corpus == "product_manual":
            docs = [f"Section {rng.randint(1, 12)}.{rng.randint(1, 9)}: " + rng.choice(["Hold the reset button for 10 seconds.",
                    "The LED blinks amber when firmware is updating.", "Use only the supplied 12V adapter.",
                    "Pairing mode times out after 2 minutes.", "Clean the filter monthly."]) for _ in range(4)]
            q = rng.choice(["how do I reset it", "why is the light orange", "can I use another charger", "pairing keeps failing", "how often to clean filter"])
        else:
            topic = rng.choice(ALL_TOPICS)
            docs = [paragraph(rng, topic, 2) for _ in range(3)]
            q = rng.choice([f"what is {topic}?", f"why does {topic} matter", f"who studied {topic} first", f"tell me about {topic}"])
        ctx = "\n".join(f"[{i + 1}] {d}" for i, d in enumerate(docs))
        msgs = [{"role": "system", "content": "Answer only from the provided context. Cite sources like [1]. If unsure, say so."},
                {"role": "user", "content": f"Context:\n{ctx}\n\nQuestion: {q}"}]
        T.emit(t, org, f"{org}-rag", rng.choice(ips), chat_body("gpt-4o-mini", msgs, temperature=0.1, user=f"emp-{rng.randint(1, 800)}"), ln(rng, 140, 0.5))


def eval_harness(T, rng, bench, variant):
    """Weekly benchmark runs: fixed subset, several models, temperature 0, some CoT, some logprobs."""
    org = T.org("eval_harness", False, note=variant)
    ipaddr = T.ip()
    key = f"{org}-ci"
    subset = rng.sample(bench, T.n(rng.randint(300, 500)))
    models = rng.sample(MODELS_CHAT, rng.randint(2, 3))
    hour = rng.choice([1, 3, 22])
    for week in range(2):
        t0 = week * 7 * 86400 + hour * 3600 + rng.uniform(0, 600) + (86400 * rng.choice([0, 1]) if variant == "midweek" else 0)
        t = t0
        for model in models:
            for cat, q in subset:
                if cat == "mc":
                    if variant == "logprobs":
                        body = chat_body(model, [{"role": "user", "content": f"{q}\nAnswer with the letter only."}],
                                         temperature=0, max_tokens=1, logprobs=True, top_logprobs=4)
                    else:
                        body = chat_body(model, [{"role": "user", "content": f"{q}\nAnswer:"}], temperature=0, max_tokens=1)
                    out = 1
                elif cat == "math":
                    body = chat_body(model, [{"role": "user", "content": f"Q: {q}\nA: Let's think step by step."}], temperature=0, max_tokens=512)
                    out = ln(rng, 180, 0.3)
                elif cat == "code":
                    body = chat_body(model, [{"role": "user", "content": q}], temperature=0, max_tokens=768)
                    out = ln(rng, 250, 0.3)
                else:
                    body = chat_body(model, [{"role": "user", "content": q}], temperature=0, max_tokens=64)
                    out = ln(rng, 30, 0.3)
                T.emit(t, org, key, ipaddr, body, out)
                t += rng.uniform(0.2, 0.9)


def nat_group(T, rng, kind, count, start_day, hours, assignment):
    """Classroom or hackathon: many small accounts behind one NAT address, synchronized sessions."""
    ipaddr = T.ip()
    orgs = []
    for i in range(count):
        org = T.org(kind, False, note=f"nat {ipaddr}")
        orgs.append(org)
        home = T.ip()
        sessions = []
        if kind == "classroom":
            for d in (1, 3, 8):  # Tue, Thu, next Tue 14:00 UTC
                if d < DAYS:
                    sessions.append((d * 86400 + 14 * 3600 + rng.uniform(0, 600), 90 * 60, ipaddr))
            for _ in range(rng.randint(0, 3)):
                sessions.append((rng.randrange(DAYS) * 86400 + rng.uniform(18, 22) * 3600, 40 * 60, home))
        else:
            for h in range(0, hours, 3):
                if rng.random() < 0.7:
                    sessions.append((start_day * 86400 + h * 3600 + rng.uniform(0, 1800), 100 * 60, ipaddr))
        for (s, length, addr) in sessions:
            t = s
            msgs = [{"role": "system", "content": "You are a patient teaching assistant." if kind == "classroom" else "You help hackathon teams ship fast."}]
            while t < s + length:
                if len(msgs) < 2 and rng.random() < 0.6:
                    content = rng.choice(assignment)
                    if rng.random() < 0.5:
                        content = content.lower()
                else:
                    content = human_question(rng) if kind == "classroom" and rng.random() < 0.3 else rng.choice(assignment + [human_followup(rng)])
                msgs.append({"role": "user", "content": content})
                out = ln(rng, 260, 0.5)
                T.emit(t, org, f"{org}-k", addr, chat_body("gpt-4o-mini", list(msgs[-7:]), temperature=rng.choice([0.7, 1.0, None])), out)
                msgs.append({"role": "assistant", "content": assistant_text(rng, 3)})
                t += rng.uniform(40, 420)
    return orgs


def single_turn_product(T, rng, variant):
    """Customers who legitimately send many single-turn prompts."""
    heavy = variant in ("answer_box", "flashcards")
    org = T.org("single_turn_product", False, heavy=heavy, note=variant)
    net = T.subnet()
    ips = [T.ip(net) for _ in range(rng.randint(2, 4))]
    tz = rng.choice([-5, 0, 1, 9])
    total = T.n(rng.randint(4000, 6000) if heavy else rng.randint(1200, 2000))
    for _ in range(total):
        t = diurnal_time(rng, tz, CONSUMER_CURVE, 1.0)
        user = None
        if variant == "answer_box":  # search engine answer box: anonymous single questions
            msgs = [{"role": "system", "content": "Give a direct 2-4 sentence answer for a search results page."},
                    {"role": "user", "content": human_question(rng)}]
            params = {"temperature": 0.3, "max_tokens": 300}
            out = ln(rng, 90, 0.4)
        elif variant == "flashcards":  # edtech: students pick any topic
            topic = rng.choice(ALL_TOPICS)
            msgs = [{"role": "user", "content": f"Make {rng.choice([5, 8, 10])} flashcards (Q/A) on {topic}. Level: {rng.choice(['beginner', 'exam prep', 'GCSE', 'AP', 'intro college'])}."}]
            params = {"temperature": 0.5, "response_format": {"type": "json_object"}}
            out = ln(rng, 420, 0.3)
            user = f"stu_{rng.randint(1, 20000)}"
        elif variant == "email_subjects":
            msgs = [{"role": "user", "content": f"Suggest a subject line for this email: {rng.choice(['invoice reminder', 'team offsite', 'product launch', 'welcome new hire', 'price increase notice'])} for {rng.choice(['clients', 'the team', 'subscribers'])}"}]
            params = {"temperature": 0.9, "max_tokens": 20}
            out = ln(rng, 12, 0.3)
        else:  # writing helper: user-written requests to draft content
            q = fill(rng, rng.choice(["write a {form} about my {business}", "draft a short {form} for my {relation}'s {occasion}",
                                      "help me write a {form} about {topic} for my class", "blog post ideas for my {business}"]),
                     dict(SLOTS, form=["blog post", "newsletter", "speech", "essay", "post", "bio"], topic=ALL_TOPICS))
            msgs = [{"role": "user", "content": q}]
            params = {"temperature": 0.8}
            out = ln(rng, 450, 0.5)
            user = f"acct{rng.randint(1, 5000)}"
        T.emit(t, org, f"{org}-api", rng.choice(ips), chat_body("gpt-4o-mini", msgs, user=user, **params), out)


# ---------------------------------------------------------------- harvesting ------------------

def steady_times(rng, n, start, mean_gap, jitter=0.3, night_only=False):
    t = start
    out = []
    while len(out) < n and t < SPAN:
        t += mean_gap * rng.uniform(1 - jitter, 1 + jitter)
        if night_only and (t % 86400) >= 7 * 3600:  # runs 00:00-07:00 UTC only
            t = (t // 86400 + 1) * 86400 + rng.uniform(0, 300)
        out.append(t)
    return out


def bursty_times(rng, n, burst_len, gap_in, pause):
    out, t = [], rng.uniform(0, 3600)
    while len(out) < n and t < SPAN:
        for _ in range(burst_len):
            out.append(t)
            t += rng.uniform(*gap_in)
        t += rng.uniform(*pause)
    return out[:n]


def timing(rng, style, n):
    if style == "steady":
        return steady_times(rng, n, rng.uniform(0, 7200), SPAN * 0.95 / n)
    if style == "night":
        return steady_times(rng, n, rng.uniform(0, 600), 7 * 3600 * DAYS * 0.9 / n, night_only=True)
    if style == "bursty":
        return bursty_times(rng, n, 200, (0.5, 3), (2 * 3600, 9 * 3600))
    # office hours from a plausible timezone, to look human
    return sorted(diurnal_time(rng, -5, BUSINESS_CURVE, 0.2) for _ in range(n))


def benchmark_replay(T, rng, bench, idx, blatant_ips=1):
    wrappers = [
        ("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{q}\n\n### Response:", None),
        ("{q}\n\nProvide the answer and a thorough explanation of why each other option is wrong.", "You are a world-class tutor."),
        ("Question:\n{q}\n\nExplain your solution in detail, then state the final answer on its own line.", None),
        ("[INST] Solve the following. Be rigorous and complete. [/INST]\n{q}", "You are an expert problem solver."),
        ("Please help with this:\n{q}", None),
    ]
    org = T.org("benchmark_replay", True, blatant=True, note=f"wrapper {idx}")
    w, sysm = wrappers[idx % len(wrappers)]
    style = ["steady", "bursty", "night", "office", "steady"][idx % 5]
    n = T.n(rng.randint(2500, 4000))
    items = rng.sample(bench, min(n, len(bench)))
    temp = [0.7, 1.0, 0.0, 0.6, 0.9][idx % 5]
    ips = [T.ip() for _ in range(blatant_ips)]
    for t, (cat, q) in zip(timing(rng, style, n), items):
        msgs = ([{"role": "system", "content": sysm}] if sysm else []) + [{"role": "user", "content": w.replace("{q}", q)}]
        out = ln(rng, {"mc": 260, "math": 380, "code": 520, "reading": 220}[cat], 0.35)
        T.emit(t, org, f"{org}-main", rng.choice(ips), chat_body(rng.choice(["gpt-4.1", "gpt-4o"]), msgs, temperature=temp, max_tokens=2048), out)


def self_instruct(T, rng, idx):
    templates = [
        ["Write a {form} about {topic} for {audience}."],
        ["Compose a detailed {form} on {topic}, aimed at {audience}. Use headings where useful."],
        ["Create a {form} explaining {topic} to {audience}. Include at least three concrete examples.",
         "Create a {form} introducing {topic} to {audience}. Include at least three concrete examples."],
        ["Generate a {form} for {audience} about {topic}. Be accurate and engaging."],
        ["Task: {form}\nSubject: {topic}\nReader: {audience}\nLength: long\nWrite it now."],
    ]
    org = T.org("self_instruct", True, blatant=True, note=f"template {idx}")
    tpl = templates[idx % len(templates)]
    temp = [1.0, 0.7, 0.9, 0.8, 1.0][idx % 5]
    sysm = [None, "You are a knowledgeable, helpful writer.", None, "You are a helpful assistant.", None][idx % 5]
    style = ["steady", "night", "bursty", "steady", "office"][idx % 5]
    n = T.n(rng.randint(2500, 4500))
    ipaddr = T.ip()
    bank = {"form": FORMS, "topic": ALL_TOPICS, "audience": AUDIENCES}
    for t in timing(rng, style, n):
        q = fill(rng, rng.choice(tpl), bank)
        msgs = ([{"role": "system", "content": sysm}] if sysm else []) + [{"role": "user", "content": q}]
        T.emit(t, org, f"{org}-gen", ipaddr, chat_body("gpt-4.1", msgs, temperature=temp, max_tokens=[4096, None, 3000, 2048, None][idx % 5]), ln(rng, 1100, 0.3, 300, 4000))


def cot_elicitation(T, rng, bench, idx):
    org = T.org("cot_elicitation", True, blatant=True, note=f"style {idx}")
    n = T.n(rng.randint(2500, 4000))
    ipaddr = T.ip()
    style = ["steady", "bursty", "office", "night", "steady"][idx % 5]
    rubric = "(1) correctness, (2) completeness of reasoning, (3) clarity, (4) use of evidence"
    for t in timing(rng, style, n):
        src = rng.random()
        q = rng.choice(bench)[1] if src < 0.6 else human_question(rng)
        if idx % 5 == 0:
            msgs = [{"role": "system", "content": "Before answering, reason step by step inside <thinking></thinking> tags. Consider at least two approaches and check your work. Then give the final answer after 'ANSWER:'."},
                    {"role": "user", "content": q}]
        elif idx % 5 == 1:
            msgs = [{"role": "user", "content": f"{q}\n\nWork through this carefully, showing every intermediate step and explaining why each step follows. Then grade your own solution against this rubric: {rubric}, scoring each out of 10 with a justification."}]
        elif idx % 5 == 2:  # judge/rubric harvesting
            cand = assistant_text(rng, 3)
            msgs = [{"role": "system", "content": "You are a strict grader."},
                    {"role": "user", "content": f"Question: {q}\n\nCandidate response: {cand}\n\nEvaluate the candidate against each rubric criterion {rubric}. For each, explain your reasoning in detail before giving a 1-10 score. Finish with an overall score and a corrected model answer."}]
        elif idx % 5 == 3:
            msgs = [{"role": "user", "content": f"Let's reason about this very explicitly, one numbered step at a time, and don't skip anything obvious.\n\n{q}"}]
        else:
            msgs = [{"role": "system", "content": "Always explain your full reasoning process first under 'Reasoning:', then 'Final answer:'."},
                    {"role": "user", "content": q}]
        T.emit(t, org, f"{org}-k1", ipaddr, chat_body("gpt-4.1", msgs, temperature=[0.0, 0.7, 0.3, 1.0, 0.5][idx % 5], max_tokens=4096), ln(rng, 900, 0.35, 200, 4000))


def logprob_harvest(T, rng, bench, idx):
    org = T.org("logprob_harvest", True, blatant=True, note=["chat top20", "completions echo", "next-token", "n=16 distribution", "mixed"][idx % 5])
    n = T.n(rng.randint(2500, 4000))
    ipaddr = T.ip()
    style = ["steady", "bursty", "steady", "office", "night"][idx % 5]
    for t in timing(rng, style, n):
        r = rng.random()
        q = human_question(rng) if r < 0.5 else (rng.choice(bench)[1] if r < 0.8 else paragraph(rng, rng.choice(ALL_TOPICS), 3))
        endpoint = "/v1/chat/completions"
        if idx % 5 == 0:
            body = chat_body("gpt-4o", [{"role": "user", "content": q}], temperature=1.0, logprobs=True, top_logprobs=20, max_tokens=512)
            out = ln(rng, 380, 0.4)
        elif idx % 5 == 1:
            endpoint = "/v1/completions"
            text = paragraph(rng, rng.choice(ALL_TOPICS), rng.randint(2, 5))
            body = {"model": "gpt-3.5-turbo-instruct", "prompt": text, "logprobs": 5, "echo": True, "max_tokens": rng.choice([16, 32, 64]), "temperature": 1.0}
            out = body["max_tokens"]
        elif idx % 5 == 2:
            body = chat_body("gpt-4o-mini", [{"role": "user", "content": q}], temperature=0, logprobs=True, top_logprobs=10, max_tokens=1)
            out = 1
        elif idx % 5 == 3:
            body = chat_body("gpt-4o", [{"role": "user", "content": q}], temperature=1.0, n=16, max_tokens=200)
            out = ln(rng, 150, 0.3) * 16
        else:
            lp = rng.random() < 0.7
            body = chat_body("gpt-4.1-mini", [{"role": "user", "content": q}], temperature=rng.choice([0.0, 1.0]), logprobs=lp, top_logprobs=8 if lp else None, n=rng.choice([1, 1, 4]), max_tokens=400)
            out = ln(rng, 300, 0.4) * body["n"]
        T.emit(t, org, f"{org}-x", ipaddr, body, out, endpoint=endpoint)


def segment_app(T, rng, share, bench):
    """A genuine consumer chat app with one key + one backend address harvesting `share` of its traffic."""
    org = T.org("segment_harvest", True, note=f"harvest share {share:.0%}")
    net = T.subnet()
    ips = [T.ip(net) for _ in range(4)]
    keys = [f"{org}-ios", f"{org}-android", f"{org}-web"]
    sessions = T.n(rng.randint(700, 1000))
    before = len(T.events)
    consumer_chat(T, rng, org=org, keys=keys, ips=ips, users=300, sessions=sessions, tz=rng.choice([-5, 1, 8]),
                  temp=0.7, sys_prompt="You are Juniper, the assistant in our app. Be brief, kind and practical.")
    genuine = len(T.events) - before
    n = int(genuine * share / (1 - share))
    hkey, hip = f"{org}-internal-eval", ips[rng.randrange(4)]
    suffix = rng.choice(["\n\nGive a complete, detailed answer.", "\n\nAnswer thoroughly, with examples.", ""])
    for t in steady_times(rng, n, rng.uniform(0, 3 * 86400), SPAN * 0.6 / max(1, n), 0.6):
        q = human_question(rng) if rng.random() < 0.7 else rng.choice(bench)[1]
        msgs = [{"role": "system", "content": "You are Juniper, the assistant in our app. Be brief, kind and practical."},
                {"role": "user", "content": q + suffix}]
        T.emit(t, org, hkey, hip, chat_body("gpt-4o-mini", msgs, temperature=0.7, max_tokens=2048), ln(rng, 700, 0.35, 100, 3000))


def hydra(T, rng, bench, members=30):
    pool = [T.ip() for _ in range(9)]
    wrapper = "Respond as a thorough expert assistant. Give a complete, well-structured answer.\n\n<<<\n{q}\n>>>"
    orgs = []
    for i in range(members):
        org = T.org("hydra", True, campaign="hydra-1")
        orgs.append((org, rng.sample(pool, rng.randint(2, 4)), rng.choice(["gpt-4o", "gpt-4.1"])))
    queue = [human_question(rng) if rng.random() < 0.55 else rng.choice(bench)[1] for _ in range(T.n(12000))]
    qi = 0
    t = rng.uniform(0, 3600)
    while t < SPAN and qi < len(queue):
        active = rng.sample(orgs, rng.randint(8, 16))
        for org, addrs, model in active:
            s = t + rng.uniform(0, 9 * 60)
            for _ in range(rng.randint(4, 14)):
                if qi >= len(queue):
                    break
                msgs = [{"role": "user", "content": wrapper.replace("{q}", queue[qi])}]
                qi += 1
                T.emit(s, org, f"{org}-key", rng.choice(addrs), chat_body(model, msgs, temperature=0.7, max_tokens=1500), ln(rng, 650, 0.35, 100, 1500))
                s += rng.uniform(6, 45)
        t += rng.uniform(2, 4.5) * 3600


def build(seed, scale):
    rng = random.Random(seed)
    T = Traffic(seed, scale)
    bench = build_benchmark(seed)
    # benign
    for i in range(12):
        consumer_chat(T, rng, users=rng.randint(40, 400), sessions=rng.randint(250, 900), tz=rng.choice([-8, -5, 0, 1, 5.5, 8, 9]),
                      temp=rng.choice([0.7, 0.8, 1.0, None]), model=rng.choice(["gpt-4o-mini", "gpt-4o"]))
    for v in ["descriptions", "support_classifier_logprobs", "ad_headlines_n4", "listing_writer", "job_posts"]:
        templated_product(T, rng, v)
    for v in ["system_prompt", "tagged"]:
        translation_pipeline(T, rng, v)
    for v in ["topic", "entities", "sentiment", "grading"]:
        labelling_pipeline(T, rng, v)
    for d in ["devops", "travel", "sql", "devops", "sql", "travel"]:
        agent(T, rng, d)
    for v in ["plain", "logprobs", "midweek"]:
        eval_harness(T, rng, bench, v)
    nat_group(T, rng, "classroom", 14, 0, 0, [
        "Explain the difference between a list and a tuple in Python",
        "What is Big-O notation and why does it matter?", "Help me understand recursion with an example",
        "Why does my for loop print the last value three times?", "What does 'mutable' mean?",
        "Explain the difference between a list and a tuple in python with examples"])
    nat_group(T, rng, "hackathon", 12, 5, 40, [
        "How do I call a REST API from Next.js and show the result?", "Write a Flask endpoint that accepts an image upload",
        "Give me a pitch for an app that helps people share leftover food", "Fix CORS error on localhost:3000",
        "How do I deploy a docker container to a cheap host quickly", "Generate a JSON schema for a todo item"])
    for v in ["answer_box", "flashcards", "email_subjects", "writing_helper"]:
        single_turn_product(T, rng, v)
    for _ in range(6):
        coding_assistant(T, rng)
    for c in ["hr_policies", "product_manual", "encyclopedia", "hr_policies", "product_manual"]:
        rag(T, rng, c)
    # harvesting
    for i in range(5):
        benchmark_replay(T, rng, bench, i, blatant_ips=1 + (i % 2))
        self_instruct(T, rng, i)
        cot_elicitation(T, rng, bench, i)
        logprob_harvest(T, rng, bench, i)
    for share in (0.10, 0.20, 0.20, 0.30):
        segment_app(T, rng, share, bench)
    hydra(T, rng, bench)
    return T, bench


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply request counts (default 1.0)")
    ap.add_argument("--out", required=True, help="output directory (traffic.jsonl, labels.json)")
    args = ap.parse_args()
    T, bench = build(args.seed, args.scale)
    path, n = T.write(args.out, bench)
    kinds = {}
    for lab in T.labels.values():
        kinds[lab["kind"]] = kinds.get(lab["kind"], 0) + 1
    print(f"wrote {n} requests for {len(T.labels)} organizations to {path}")
    print(", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()
