"""A built-in synthetic instruction data set whose every answer can be checked exactly.

It lets the whole pipeline run, and be tested, with no data on disk. The records cover the same
task kinds as typical Alpaca data (writing, question answering, rewriting, classification,
summarising, extracting JSON), but each answer is computed from the question (arithmetic, unit
conversion, small lookup tables, sorting, counting), so a model's output can be scored by
exact match. Generation is deterministic in `(n, seed)`, and `synth_records(n, seed)` is a
prefix of `synth_records(m, seed)` for m > n.
"""

import json
import random
from collections.abc import Callable

Record = dict[str, str]
Generator = Callable[[random.Random], Record]

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Brazil": "Brasília",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "India": "New Delhi",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Mexico": "Mexico City",
    "Argentina": "Buenos Aires",
    "Turkey": "Ankara",
    "Vietnam": "Hanoi",
    "Thailand": "Bangkok",
    "Morocco": "Rabat",
}
ANTONYMS = {
    "hot": "cold",
    "tall": "short",
    "happy": "sad",
    "early": "late",
    "heavy": "light",
    "loud": "quiet",
    "fast": "slow",
    "rich": "poor",
    "open": "closed",
    "strong": "weak",
    "wide": "narrow",
    "empty": "full",
    "ancient": "modern",
    "generous": "stingy",
    "brave": "cowardly",
    "rough": "smooth",
    "deep": "shallow",
    "victory": "defeat",
    "accept": "refuse",
    "arrive": "depart",
    "increase": "decrease",
    "friend": "enemy",
}
PLURALS = {
    "child": "children",
    "mouse": "mice",
    "goose": "geese",
    "tooth": "teeth",
    "foot": "feet",
    "woman": "women",
    "person": "people",
    "leaf": "leaves",
    "knife": "knives",
    "wolf": "wolves",
    "city": "cities",
    "baby": "babies",
    "box": "boxes",
    "church": "churches",
    "bus": "buses",
    "cactus": "cacti",
    "crisis": "crises",
    "sheep": "sheep",
    "fish": "fish",
    "potato": "potatoes",
    "hero": "heroes",
    "photo": "photos",
    "day": "days",
    "key": "keys",
    "ox": "oxen",
    "quiz": "quizzes",
}
# (singular unit, plural unit, target plural unit, factor): value * factor converts exactly.
CONVERSIONS = [
    ("kilometer", "kilometers", "meters", 1000),
    ("meter", "meters", "centimeters", 100),
    ("kilogram", "kilograms", "grams", 1000),
    ("liter", "liters", "milliliters", 1000),
    ("hour", "hours", "minutes", 60),
    ("minute", "minutes", "seconds", 60),
    ("day", "days", "hours", 24),
    ("week", "weeks", "days", 7),
    ("foot", "feet", "inches", 12),
    ("yard", "yards", "feet", 3),
    ("centimeter", "centimeters", "millimeters", 10),
    ("ton", "tons", "kilograms", 1000),
]
CATEGORIES = {
    "fruit": ["apple", "banana", "cherry", "mango", "pear", "plum", "grape", "kiwi", "lemon", "peach"],
    "vegetable": ["carrot", "onion", "leek", "spinach", "cabbage", "turnip", "celery", "radish", "pea"],
    "animal": ["otter", "zebra", "falcon", "beaver", "lizard", "salmon", "rabbit", "badger", "moose"],
    "tool": ["hammer", "chisel", "wrench", "saw", "drill", "pliers", "spanner", "trowel", "rake"],
}
WORDS = sorted({word for words in CATEGORIES.values() for word in words} | set(ANTONYMS) | set(PLURALS))
FIRST_NAMES = [
    "Maria",
    "Tomás",
    "Aiko",
    "Lena",
    "Omar",
    "Priya",
    "Jonas",
    "Zoe",
    "Kwame",
    "Ines",
    "Mei",
    "Rafael",
    "Sofia",
    "Nikolai",
    "Amara",
    "Hugo",
    "Yara",
    "Felix",
    "Chloé",
    "Ravi",
]
LAST_NAMES = [
    "Lopez",
    "Novak",
    "Tanaka",
    "Okafor",
    "Berg",
    "Haddad",
    "Rossi",
    "Kim",
    "Moreau",
    "Silva",
    "Nguyen",
    "Fischer",
    "Costa",
    "Patel",
    "Larsen",
    "Dubois",
]
PRODUCTS = [
    "desk lamp",
    "rain jacket",
    "coffee grinder",
    "backpack",
    "chess set",
    "kettle",
    "yoga mat",
    "bike helmet",
    "notebook",
    "toaster",
    "headphones",
    "water bottle",
]
EVENTS = [
    "book club meeting",
    "team lunch",
    "garden party",
    "science fair",
    "charity run",
    "film night",
    "board game evening",
    "piano recital",
    "cooking class",
    "quiz night",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
POSITIVE = ["loved", "enjoyed", "was delighted by", "would happily recommend", "was impressed by"]
NEGATIVE = ["hated", "regretted buying", "was disappointed by", "would never recommend", "was annoyed by"]
ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def synth_records(n: int, seed: int) -> list[Record]:
    """`n` distinct records, the same for the same `(n, seed)`, each with a `kind` field."""
    if n < 0:
        raise ValueError(f"n must be zero or more, got {n}")
    rng = random.Random(seed)
    kinds = sorted(GENERATORS)
    records: list[Record] = []
    seen: set[tuple[str, str, str]] = set()
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot generate {n} distinct records; ask for fewer")
        kind = kinds[rng.randrange(len(kinds))]
        record = rng.choice(GENERATORS[kind])(rng)
        key = (record["instruction"], record["input"], record["output"])
        if key not in seen:
            seen.add(key)
            records.append({**record, "kind": kind})
    return records


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def record(instruction: str, output: str, input: str = "") -> Record:
    return {"instruction": instruction, "input": input, "output": output}


# Question answering -------------------------------------------------------------------------------


def arithmetic(rng: random.Random) -> Record:
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    op, word, result = rng.choice([("+", "plus", a + b), ("-", "minus", a - b), ("*", "times", a * b)])
    if rng.random() < 0.5:
        return record(f"What is {a} {word} {b}?", f"{a} {word} {b} is {result}.")
    return record("Calculate the value of the expression.", str(result), f"{a} {op} {b}")


def conversion(rng: random.Random) -> Record:
    one, many, target, factor = rng.choice(CONVERSIONS)
    value = rng.randint(1, 500)
    unit = one if value == 1 else many
    if rng.random() < 0.5:
        return record(f"Convert {value} {unit} to {target}.", f"{value} {unit} is {value * factor} {target}.")
    return record(f"How many {target} are there in the given amount?", f"{value * factor} {target}.", f"{value} {unit}")


def capital(rng: random.Random) -> Record:
    country = rng.choice(sorted(CAPITALS))
    city = CAPITALS[country]
    return rng.choice(
        [
            record(f"What is the capital of {country}?", f"The capital of {country} is {city}."),
            record("Name the capital city of the country below.", city, country),
            record(f"Which country has {city} as its capital?", f"{city} is the capital of {country}."),
        ]
    )


def counting(rng: random.Random) -> Record:
    words = rng.sample(WORDS, rng.randint(3, 9))
    text = " ".join(words)
    if rng.random() < 0.5:
        return record("How many words are in the following text?", str(len(words)), text)
    letter = rng.choice("aeiou")
    count = text.count(letter)
    return record(f"Count how many times the letter '{letter}' appears in the text.", str(count), text)


# Rewriting ----------------------------------------------------------------------------------------


def antonym(rng: random.Random) -> Record:
    word, opposite = rng.choice(sorted(ANTONYMS.items()))
    if rng.random() < 0.5:
        word, opposite = opposite, word
    if rng.random() < 0.5:
        return record(f"Give the opposite of the word '{word}'.", opposite)
    return record("Write the antonym of the given word.", opposite, word)


def plural(rng: random.Random) -> Record:
    word, many = rng.choice(sorted(PLURALS.items()))
    if rng.random() < 0.5:
        return record(f"What is the plural form of '{word}'?", f"The plural of '{word}' is '{many}'.")
    return record("Rewrite the noun in its plural form.", many, word)


def sort_words(rng: random.Random) -> Record:
    words = rng.sample(WORDS, rng.randint(3, 7))
    reverse = rng.random() < 0.3
    order = "reverse alphabetical" if reverse else "alphabetical"
    return record(f"Sort these words into {order} order.", ", ".join(sorted(words, reverse=reverse)), ", ".join(words))


def change_case(rng: random.Random) -> Record:
    words = rng.sample(WORDS, rng.randint(2, 6))
    text = " ".join(words)
    style, result = rng.choice([("upper case", text.upper()), ("title case", text.title())])
    return record(f"Rewrite the text in {style}.", result, text)


def reverse_words(rng: random.Random) -> Record:
    words = rng.sample(WORDS, rng.randint(3, 7))
    return record("Reverse the order of the words in the list.", " ".join(reversed(words)), " ".join(words))


# Classification -----------------------------------------------------------------------------------


def parity(rng: random.Random) -> Record:
    value = rng.randint(0, 99999)
    answer = "Even" if value % 2 == 0 else "Odd"
    return record("Classify the number as even or odd.", answer, str(value))


def category(rng: random.Random) -> Record:
    label = rng.choice(sorted(CATEGORIES))
    word = rng.choice(CATEGORIES[label])
    choices = ", ".join(sorted(CATEGORIES))
    if rng.random() < 0.5:
        *rest, last = (article(name) for name in sorted(CATEGORIES))
        options = ", ".join(rest) + f" or {last}"
        return record(f"Is {article(word)} {options}?", f"{article(word).capitalize()} is {article(label)}.")
    return record(f"Put the item into one of these categories: {choices}.", label.capitalize(), word)


def sentiment(rng: random.Random) -> Record:
    positive = rng.random() < 0.5
    verb = rng.choice(POSITIVE if positive else NEGATIVE)
    who = rng.choice(FIRST_NAMES)
    thing = rng.choice(PRODUCTS + EVENTS)
    return record(
        "Classify the sentiment of the sentence as positive or negative.",
        "Positive" if positive else "Negative",
        f"{who} {verb} the {thing}.",
    )


def compare_numbers(rng: random.Random) -> Record:
    a, b = rng.sample(range(1, 10000), 2)
    larger = max(a, b)
    return record(f"Which is larger, {a} or {b}?", f"{larger} is larger.")


# Summarising --------------------------------------------------------------------------------------


def pairs(keys: list, values: list, layout: str, separator: str = "\n") -> str:
    """A listing such as "Ann: 71" per line, the input of the summarising tasks."""
    return separator.join(layout.format(key, value) for key, value in zip(keys, values))


def scores_summary(rng: random.Random) -> Record:
    names = rng.sample(FIRST_NAMES, rng.randint(3, 5))
    scores = rng.sample(range(40, 101), len(names))
    best = names[scores.index(max(scores))]
    summary = f"{best} scored highest with {max(scores)}; the average was {sum(scores) / len(scores):.1f}."
    task = "Summarise the test scores in one sentence, naming the top scorer and the average."
    return record(task, summary, pairs(names, scores, "{}: {}"))


def shopping_summary(rng: random.Random) -> Record:
    items = rng.sample(PRODUCTS, rng.randint(2, 5))
    cents = [rng.randint(150, 9999) for _ in items]
    prices = [price / 100 for price in cents]
    summary = f"{len(items)} items costing {sum(cents) / 100:.2f} in total."  # summed in whole cents
    return record(
        "Summarise the receipt: how many items, and what is the total?", summary, pairs(items, prices, "{}: {:.2f}")
    )


def temperature_summary(rng: random.Random) -> Record:
    days = DAYS[: rng.randint(3, 7)]
    temps = [rng.randint(-5, 35) for _ in days]
    summary = f"Temperatures ranged from {min(temps)}°C to {max(temps)}°C over {len(days)} days."
    task = "Summarise the temperatures with their range in one sentence."
    return record(task, summary, pairs(days, temps, "{} {}°C", ", "))


# Extracting JSON ----------------------------------------------------------------------------------


def person_json(rng: random.Random) -> Record:
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    age = rng.randint(18, 90)
    city = rng.choice(sorted(CAPITALS.values()))
    text = f"{name} is {age} years old and lives in {city}."
    answer = json.dumps({"name": name, "age": age, "city": city}, ensure_ascii=False)
    return record("Extract the name, age and city from the text as a JSON object.", answer, text)


def order_json(rng: random.Random) -> Record:
    product = rng.choice(PRODUCTS)
    quantity = rng.randint(1, 12)
    price = rng.randint(199, 19999) / 100
    text = f"Please send {quantity} units of the {product} at {price:.2f} each."
    answer = json.dumps({"product": product, "quantity": quantity, "unit_price": price})
    return record("Return the product, quantity and unit price in this order as JSON.", answer, text)


def event_json(rng: random.Random) -> Record:
    event = rng.choice(EVENTS)
    day = rng.randint(1, 28)
    month = rng.choice(MONTHS)
    hour = rng.randint(9, 21)
    text = f"The {event} takes place on {day} {month} at {hour}:00."
    answer = json.dumps({"event": event, "day": day, "month": month, "time": f"{hour}:00"})
    return record("Pull the event, day, month and time out of the sentence as JSON.", answer, text)


# Writing ------------------------------------------------------------------------------------------


def number_words(value: int) -> str:
    """English words for 0..999 999, the way a cheque would spell them."""
    if value < 20:
        return ONES[value]
    if value < 100:
        return TENS[value // 10] + ("" if value % 10 == 0 else "-" + ONES[value % 10])
    if value < 1000:
        rest = value % 100
        return ONES[value // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = value % 1000
    tail = "" if rest == 0 else (" and " if rest < 100 else " ") + number_words(rest)
    return number_words(value // 1000) + " thousand" + tail


def spell_number(rng: random.Random) -> Record:
    value = rng.randint(0, 99999)
    if rng.random() < 0.5:
        return record(f"Write the number {value} in words.", number_words(value).capitalize() + ".")
    return record("Spell out the number in English words.", number_words(value), str(value))


def invitation(rng: random.Random) -> Record:
    event = rng.choice(EVENTS)
    day = rng.choice(DAYS)
    hour = rng.randint(1, 11)
    host = rng.choice(FIRST_NAMES)
    return record(
        f"Write a one-sentence invitation from {host} to the {event} on {day} at {hour} pm.",
        f"{host} warmly invites you to the {event} on {day} at {hour} pm.",
    )


def capital_sentence(rng: random.Random) -> Record:
    country = rng.choice(sorted(CAPITALS))
    city = CAPITALS[country]
    return record(
        "Write a sentence stating the capital of the country given.", f"{city} is the capital of {country}.", country
    )


GENERATORS: dict[str, list[Generator]] = {
    "question_answering": [arithmetic, conversion, capital, counting, compare_numbers],
    "rewriting": [antonym, plural, sort_words, change_case, reverse_words],
    "classification": [parity, category, sentiment],
    "summarising": [scores_summary, shopping_summary, temperature_summary],
    "json_extraction": [person_json, order_json, event_json],
    "writing": [spell_number, invitation, capital_sentence],
}
KINDS = tuple(sorted(GENERATORS))
