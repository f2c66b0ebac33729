"""Compose the project's plain-text corpora (original prose, written for llenergymeasure).

Writes three disjoint texts next to this script:
  tokenizer.txt   (~30 KB) trains the models' 512-piece sentencepiece tokenizer
  calibration.txt (~15 KB) calibration samples for GPTQ / AWQ / W8A8 (llm-compressor)
  evaluation.txt  (~10 KB) perplexity evaluation

Each file opens with hand-written paragraphs and continues with sentences composed from
hand-written building blocks, drawn with a fixed seed so the output is reproducible.
No sentence appears in more than one file. Run: python data/text/compose.py
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

# --- hand-written paragraphs, one list per file -------------------------------------------

TOKENIZER_PARAGRAPHS = [
    "A computer does very little on its own. It fetches an instruction, decodes it, reads a "
    "few numbers from memory, combines them and writes the result back. Everything else, from "
    "a spreadsheet to a weather forecast, is a long and careful arrangement of those small steps.",
    "When people talk about the cost of running a program, they usually mean time. The other "
    "cost is energy: every transistor that switches draws a tiny amount of charge from the "
    "supply, and billions of them switching every nanosecond add up to the heat you feel from "
    "a laptop fan.",
    "My grandmother kept a notebook beside the kitchen radio. In it she wrote the price of "
    "bread, the date the apple tree flowered and the number of eggs the hens laid each week. "
    "Looking back, it was a small scientific record, kept without any fuss for forty years.",
    "Memory is slower than arithmetic. A modern processor can multiply two numbers far faster "
    "than it can bring a fresh number in from main memory, so much of the craft of writing fast "
    "code is about keeping the data you need close to where it will be used.",
    "The river near our town rises every spring when the snow melts in the hills. Engineers "
    "built a small dam there in the nineteen fifties, and the turbine inside it still turns, "
    "feeding a few hundred homes with electricity on windy, wet evenings.",
    "A language model reads text as a sequence of tokens. Each token is a short piece of a "
    "word, chosen so that common words fit in one piece while rare words are split into "
    "several. The model then predicts, one token at a time, what is likely to come next.",
    "Scientists rarely trust a single measurement. They repeat the experiment, note how much "
    "the results vary, and report both the average and the spread. A number without its "
    "uncertainty tells you much less than it seems to.",
    "On Saturday mornings the market fills the square: cheese, bread, honey, second-hand books "
    "and a man who repairs bicycles from the back of a van. Nobody is in a hurry, and the "
    "coffee stall runs out of milk by eleven.",
    "Batteries store energy in chemical form and release it as an electric current. Their "
    "capacity is usually given in watt-hours, which is simply power multiplied by time: a "
    "sixty watt-hour battery can supply sixty watts for one hour, or six watts for ten.",
    "Compilers translate readable source code into the instructions a processor understands. "
    "A good compiler also rearranges the work, removing steps that have no effect and grouping "
    "operations so that the hardware stays busy instead of waiting.",
    "The telescope on the hill is older than the observatory around it. Students still use it "
    "on clear nights to track the moons of Jupiter, drawing their positions by hand exactly as "
    "astronomers did four centuries ago.",
    "Cooking is chemistry you can eat. Heat unfolds proteins in an egg, browns the sugars on "
    "the crust of bread and softens the fibres of an onion until it turns sweet. A recipe is "
    "an experiment that somebody has already repeated many times.",
]

CALIBRATION_PARAGRAPHS = [
    "The data centre sits on the edge of an industrial estate, a long grey building with no "
    "windows and a humming row of cooling units on the roof. Inside, thousands of servers "
    "answer requests from people who will never know where their answers came from.",
    "Quantisation stores the numbers of a neural network with fewer bits. A weight that once "
    "took thirty-two bits might be kept in eight or even four, with a shared scale that maps "
    "the small integers back to roughly the original values when they are needed.",
    "Every autumn the village holds a pumpkin contest. The winning entry last year weighed "
    "more than a small car tyre, and its grower refused to say what he fed it, beyond a vague "
    "remark about rainwater and patience.",
    "Electric kettles are surprisingly honest machines. Their power rating is printed on the "
    "base, the water they heat has a known heat capacity, and with a stopwatch you can check "
    "how much of the electricity really ends up as warmth in the water.",
    "A graphics processor contains many small arithmetic units that work in lockstep. It "
    "shines when the same operation must be applied to a large block of numbers, which is "
    "exactly what multiplying the matrices of a neural network requires.",
    "Walking to work takes twenty-five minutes if the lights are kind. On the way there is a "
    "bakery, a bridge over the canal and a corner where a cat sleeps on the same warm step "
    "every morning, whatever the season.",
    "Geologists read rocks the way historians read letters. Layers of sand, ash and shell "
    "record floods, eruptions and shallow seas, and the order of the layers tells the order "
    "in which those events happened.",
    "Caching is the habit of keeping a copy of something you expect to need again. Browsers "
    "cache pages, processors cache memory and language models cache the keys and values of "
    "earlier tokens so that they do not recompute them for every new word.",
]

EVALUATION_PARAGRAPHS = [
    "The library opened a small repair café in its basement. Once a month volunteers fix "
    "lamps, toasters and torn coats for free, and they keep a tally on a chalkboard of how "
    "many kilograms of things have been saved from the rubbish tip.",
    "Measuring the energy of a computation is harder than it sounds. The power sensor on a "
    "graphics card updates only every few milliseconds, the processor shares its supply with "
    "other work, and the idle machine draws power even when it appears to be doing nothing.",
    "Bees find their way home using the position of the sun, and they can still do it on a "
    "cloudy day because they sense the pattern of polarised light in the patches of blue sky "
    "that remain between the clouds.",
    "A small model that answers quickly can be more useful than a large one that answers "
    "slowly, but only if its answers are good enough. Deciding what counts as good enough is "
    "a question about the task, not about the model.",
    "The tide tables pinned in the harbour office are printed a year in advance. They are "
    "calculated from the motions of the moon and the sun, and they are usually right to within "
    "a few minutes, unless a strong wind pushes the sea against the coast.",
    "Floating-point numbers trade exactness for range. They can describe both the width of an "
    "atom and the distance to a star, but they round almost every result, and the order in "
    "which a long sum is added can change its last few digits.",
]

# --- building blocks for composed sentences -----------------------------------------------

SUBJECTS = {
    "computing": [
        "the compiler",
        "a small server",
        "the operating system",
        "the scheduler",
        "a graphics card",
        "the database",
        "the network switch",
        "a laptop",
        "the web browser",
        "a batch job",
        "the memory controller",
        "the language model",
        "the test suite",
        "a background process",
        "the file system",
        "the cache",
        "a virtual machine",
        "the build system",
        "a sorting routine",
        "the processor",
    ],
    "energy": [
        "the solar panel",
        "a wind turbine",
        "the power meter",
        "the battery pack",
        "a heat pump",
        "the electricity grid",
        "the cooling system",
        "a diesel generator",
        "the transformer",
        "an electric bus",
        "the substation",
        "a hydroelectric dam",
        "the thermostat",
        "a rooftop array",
        "the power supply",
    ],
    "science": [
        "the experiment",
        "a careful observer",
        "the telescope",
        "the microscope",
        "the research team",
        "a chemist",
        "the field survey",
        "the sensor",
        "the physicist",
        "a biologist",
        "the laboratory",
        "the simulation",
        "the ecologist",
        "the probe",
        "the weather station",
    ],
    "everyday": [
        "my neighbour",
        "the baker",
        "the children",
        "a cyclist",
        "the postman",
        "the old dog",
        "my brother",
        "the shopkeeper",
        "a student",
        "the gardener",
        "the bus driver",
        "our teacher",
        "the family next door",
        "a tourist",
        "the librarian",
    ],
}

VERBS = {
    "computing": [
        "compiles the project",
        "writes the results to disk",
        "waits for memory",
        "schedules another task",
        "loads the weights",
        "reads the configuration",
        "multiplies two large matrices",
        "retries the request",
        "flushes the cache",
        "splits the work into batches",
        "logs every error",
        "allocates a new buffer",
        "checks the checksum",
        "restarts the service",
        "measures the latency",
    ],
    "energy": [
        "produces more power at noon",
        "draws about forty watts",
        "stores the surplus",
        "heats the water slowly",
        "feeds the local grid",
        "loses a little heat",
        "runs at half capacity",
        "records every kilowatt-hour",
        "balances the load",
        "charges overnight",
        "wastes less energy than before",
        "cools the room",
    ],
    "science": [
        "repeats the measurement",
        "records the temperature",
        "counts the samples",
        "tests the hypothesis",
        "publishes the data",
        "checks the calibration",
        "observes a faint signal",
        "compares the two groups",
        "estimates the error",
        "follows the migration",
        "collects soil samples",
        "models the climate",
    ],
    "everyday": [
        "walks to the market",
        "bakes fresh bread",
        "waters the tomatoes",
        "reads the newspaper",
        "fixes the old bicycle",
        "cooks a simple dinner",
        "paints the fence",
        "visits the library",
        "plays in the park",
        "carries the shopping home",
        "tidies the kitchen",
        "writes a long letter",
    ],
}

TIMES = [
    "every morning",
    "before lunch",
    "late at night",
    "on Sundays",
    "during the winter",
    "after the storm",
    "twice a week",
    "at the end of the month",
    "in the summer",
    "while everyone sleeps",
    "at exactly six o'clock",
    "once the rain stops",
    "in the early afternoon",
    "for a few minutes",
    "at the start of each year",
]

REASONS = [
    "because the old method was too slow",
    "so that nothing is lost",
    "because the deadline is close",
    "although nobody asked for it",
    "since the cost keeps rising",
    "to save a little energy",
    "because it is cheaper",
    "so that the numbers can be checked later",
    "even though it takes longer",
    "because the rules changed",
    "to keep the results honest",
    "while the weather holds",
    "unless something breaks",
    "because the sensor drifts",
    "so the children can help",
]

ADJECTIVES = [
    "quiet",
    "noisy",
    "efficient",
    "fragile",
    "reliable",
    "expensive",
    "cheap",
    "warm",
    "cold",
    "bright",
    "careful",
    "slow",
    "fast",
    "heavy",
    "light",
    "old",
    "new",
    "small",
    "large",
    "patient",
    "curious",
    "busy",
    "simple",
    "complicated",
    "clean",
]

NOUNS = [
    "kitchen",
    "workshop",
    "garden",
    "laboratory",
    "office",
    "station",
    "library",
    "harbour",
    "valley",
    "factory",
    "classroom",
    "bridge",
    "forest",
    "market",
    "museum",
    "server room",
    "village",
    "river",
    "hospital",
    "railway",
]

QUANTITIES = [
    "three",
    "seven",
    "twelve",
    "twenty",
    "forty",
    "a hundred",
    "several thousand",
    "nearly fifty",
    "about two hundred",
    "more than ten",
    "fewer than five",
    "eighty",
    "sixteen",
    "sixty-four",
    "five hundred and twelve",
]

UNITS = [
    "watts",
    "joules",
    "kilowatt-hours",
    "seconds",
    "milliseconds",
    "bytes",
    "megabytes",
    "degrees",
    "metres",
    "kilograms",
    "litres",
    "tokens",
    "samples",
    "volts",
    "hertz",
]

CONNECTIVES = [
    "However,",
    "Meanwhile,",
    "In the end,",
    "For this reason,",
    "Surprisingly,",
    "As a result,",
    "On the other hand,",
    "Later that day,",
    "In practice,",
    "Of course,",
]

QUESTIONS = [
    "Why does {s} need {q} {u} when the {a} one needs far fewer?",
    "How many {u} does {s} use {t}?",
    "Who decided that {s} should run {t}?",
    "What happens to the {n} when {s} stops?",
    "Is it true that {s} {v} {t}?",
]

TEMPLATES = [
    "{S} {v} {t}.",
    "{S} {v} {r}.",
    "{C} {s} {v} {t}.",
    "In the {a} {n}, {s} {v} {r}.",
    "{S} uses {q} {u} {t}, {r}.",
    "Nobody expected {s} to need {q} {u}, but it did.",
    "{S} and {s2} share the same {a} {n}.",
    "The {a} {n} is where {s} {v}.",
    "{C} the {n} became {a} {r}.",
    "If {s} {v}, {s2} {v2} as well.",
    "{S} {v}; {s2} {v2} {t}.",
    "We measured {q} {u} in the {n}, which is {a} for this time of year.",
    "The report says that {s} {v} {t}.",
    "{S}, which is {a}, {v} {r}.",
    "Before {s} {v}, {s2} usually {v2}.",
]


def _sentence(rng: random.Random) -> str:
    """Compose one sentence from the building blocks."""
    topic, topic2 = rng.choice(list(SUBJECTS)), rng.choice(list(SUBJECTS))
    fields = {
        "s": rng.choice(SUBJECTS[topic]),
        "v": rng.choice(VERBS[topic]),
        "s2": rng.choice(SUBJECTS[topic2]),
        "v2": rng.choice(VERBS[topic2]),
        "t": rng.choice(TIMES),
        "r": rng.choice(REASONS),
        "a": rng.choice(ADJECTIVES),
        "n": rng.choice(NOUNS),
        "q": rng.choice(QUANTITIES),
        "u": rng.choice(UNITS),
        "C": rng.choice(CONNECTIVES),
    }
    fields["S"] = fields["s"][0].upper() + fields["s"][1:]
    template = rng.choice(QUESTIONS) if rng.random() < 0.08 else rng.choice(TEMPLATES)
    text = template.format(**fields)
    return text[0].upper() + text[1:]


def compose(paragraphs: list[str], target_bytes: int, rng: random.Random, used: set[str]) -> str:
    """Hand-written paragraphs first, then composed paragraphs until `target_bytes` is reached."""
    blocks = list(paragraphs)
    size = sum(len(p.encode()) + 2 for p in blocks)
    while size < target_bytes:
        sentences: list[str] = []
        while len(sentences) < rng.randint(3, 6):
            candidate = _sentence(rng)
            if candidate not in used:
                used.add(candidate)
                sentences.append(candidate)
        paragraph = " ".join(sentences)
        blocks.append(paragraph)
        size += len(paragraph.encode()) + 2
    # Interleave: keep the hand-written paragraphs spread through the text.
    handwritten, composed = blocks[: len(paragraphs)], blocks[len(paragraphs) :]
    out: list[str] = []
    step = max(1, len(composed) // max(1, len(handwritten)))
    for i, para in enumerate(handwritten):
        out.append(para)
        out.extend(composed[i * step : (i + 1) * step])
    out.extend(composed[len(handwritten) * step :])
    return "\n\n".join(out) + "\n"


def main() -> None:
    used: set[str] = set()
    specs = [
        ("tokenizer.txt", TOKENIZER_PARAGRAPHS, 30_000, 11),
        ("calibration.txt", CALIBRATION_PARAGRAPHS, 15_000, 22),
        ("evaluation.txt", EVALUATION_PARAGRAPHS, 10_000, 33),
    ]
    for name, paragraphs, target, seed in specs:
        text = compose(paragraphs, target, random.Random(seed), used)
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"{name}: {len(text.encode())} bytes")


if __name__ == "__main__":
    main()
