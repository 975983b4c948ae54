"""The small QA sample qalign ships (`data/sample/nq-sample.{train,dev}.jsonl`), written by hand.

Each fact below is an original, easily checked general-knowledge question (NQ style: lowercase, no '?') with
its answer aliases and a short passage composed for it. Every record gets 3 passages: its own (the only one
holding the answer) and 2 distractors taken from other facts of the same split. Regenerate with
`python scripts/make_sample.py`; the output is deterministic.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from qalign.io import atomic_write_jsonl
from qalign.text import normalize_answer

Fact = tuple[str, list[str], str, str]  # question, answer aliases, passage title, passage text

TRAIN: list[Fact] = [
    ("what is the capital of australia", ["Canberra"], "Canberra",
     "Canberra is the capital of Australia. Its site was chosen in 1908 as a compromise between Sydney and Melbourne."),
    ("who wrote the novel pride and prejudice", ["Jane Austen"], "Pride and Prejudice",
     "Pride and Prejudice is an 1813 novel by the English writer Jane Austen."),
    ("who invented the telephone", ["Alexander Graham Bell"], "Telephone",
     "Alexander Graham Bell was granted the first United States patent for the telephone in 1876."),
    ("what is the largest planet in the solar system", ["Jupiter"], "Jupiter",
     "Jupiter is the fifth planet from the Sun and the largest planet in the Solar System."),
    ("in what year did the berlin wall fall", ["1989"], "Berlin Wall",
     "The Berlin Wall, which divided East and West Berlin, was opened on 9 November 1989."),
    ("who painted the mona lisa", ["Leonardo da Vinci", "Leonardo"], "Mona Lisa",
     "The Mona Lisa is a portrait painted by the Italian artist Leonardo da Vinci in the early sixteenth century."),
    ("what is the chemical symbol for gold", ["Au"], "Gold",
     "Gold is a chemical element with the symbol Au, from the Latin word aurum, and atomic number 79."),
    ("who was the first person to walk on the moon", ["Neil Armstrong"], "Apollo 11",
     "During the Apollo 11 mission in July 1969, Neil Armstrong became the first person to walk on the Moon."),
    ("what is the longest river in africa", ["Nile", "Nile River"], "Nile",
     "The Nile flows north through northeastern Africa into the Mediterranean Sea and is the longest river in Africa."),
    ("who developed the theory of general relativity", ["Albert Einstein", "Einstein"], "General relativity",
     "General relativity is the theory of gravitation that Albert Einstein published in 1915."),
    ("what is the capital of canada", ["Ottawa"], "Ottawa",
     "Ottawa, on the south bank of the Ottawa River in Ontario, is the capital city of Canada."),
    ("who wrote romeo and juliet", ["William Shakespeare", "Shakespeare"], "Romeo and Juliet",
     "Romeo and Juliet is a tragedy by William Shakespeare about two young lovers from feuding families."),
    ("how many continents are there on earth", ["seven", "7"], "Continent",
     "By the most common convention there are seven continents: Africa, Antarctica, Asia, Australia, Europe, "
     "North America and South America."),
    ("what is the boiling point of water in celsius at sea level", ["100 degrees Celsius", "100"], "Boiling point",
     "At standard atmospheric pressure, as at sea level, pure water boils at 100 degrees Celsius."),
    ("who discovered penicillin", ["Alexander Fleming", "Fleming"], "Penicillin",
     "Penicillin was discovered in 1928 by the Scottish physician Alexander Fleming."),
    ("what is the smallest prime number", ["2", "two"], "Prime number",
     "A prime number is a natural number greater than 1 with no divisors but 1 and itself; the smallest prime is 2."),
    ("what is the capital of japan", ["Tokyo"], "Tokyo",
     "Edo was renamed Tokyo in 1868 and became the seat of the emperor; today Tokyo is the capital of Japan."),
    ("who composed the four seasons", ["Antonio Vivaldi", "Vivaldi"], "The Four Seasons",
     "The Four Seasons is a group of four violin concertos by the Italian composer Antonio Vivaldi, printed in 1725."),
    ("what gas do plants absorb from the air for photosynthesis", ["carbon dioxide", "CO2"], "Photosynthesis",
     "In photosynthesis, plants use light energy to turn carbon dioxide from the air and water into sugars."),
    ("who was the first president of the united states", ["George Washington"], "George Washington",
     "George Washington served as the first president of the United States from 1789 to 1797."),
    ("in which country are the pyramids of giza", ["Egypt"], "Giza pyramid complex",
     "The pyramids of Giza stand on the Giza Plateau on the outskirts of Cairo, Egypt."),
    ("what is the hardest natural material", ["diamond"], "Diamond",
     "Diamond, a form of pure carbon, is the hardest naturally occurring material known."),
    ("who wrote on the origin of species", ["Charles Darwin", "Darwin"], "On the Origin of Species",
     "On the Origin of Species, published by Charles Darwin in 1859, set out evolution by natural selection."),
    ("what is the capital of italy", ["Rome"], "Rome",
     "Rome is the capital city of Italy and was once the centre of the Roman Empire."),
    ("how many legs does a spider have", ["eight", "8"], "Spider",
     "Spiders are arachnids with eight legs and a body divided into two main parts."),
    ("the eiffel tower is named after which engineer", ["Gustave Eiffel"], "Eiffel Tower",
     "The Eiffel Tower in Paris is named after Gustave Eiffel, whose company designed and built it for the 1889 "
     "World's Fair."),
    ("what is the largest ocean on earth", ["Pacific Ocean", "Pacific"], "Pacific Ocean",
     "The Pacific Ocean is the largest and deepest of Earth's five oceans."),
    ("who wrote the odyssey", ["Homer"], "Odyssey",
     "The Odyssey is an ancient Greek epic poem traditionally attributed to Homer."),
    ("at what temperature does water freeze in fahrenheit", ["32 degrees Fahrenheit", "32"], "Fahrenheit",
     "On the Fahrenheit scale water freezes at 32 degrees and boils at 212 degrees at sea level."),
    ("what is the capital of spain", ["Madrid"], "Madrid",
     "Madrid, in the centre of the Iberian Peninsula, is the capital and largest city of Spain."),
    ("who wrote the communist manifesto", ["Karl Marx and Friedrich Engels", "Karl Marx", "Friedrich Engels"],
     "The Communist Manifesto",
     "The Communist Manifesto was written by Karl Marx and Friedrich Engels and first published in London in 1848."),
    ("which planet is known as the red planet", ["Mars"], "Mars",
     "Mars is often called the Red Planet because iron oxide on its surface gives it a reddish look."),
    ("in what year did world war ii end", ["1945"], "World War II",
     "World War II ended in 1945, with Germany surrendering in May and Japan in September."),
    ("who is the author of the harry potter books", ["J. K. Rowling", "Rowling"], "Harry Potter",
     "Harry Potter is a series of seven fantasy novels written by the British author J. K. Rowling."),
    ("what is the currency of japan", ["yen", "Japanese yen"], "Japanese yen",
     "The yen is the official currency of Japan."),
    ("who formulated the law of universal gravitation", ["Isaac Newton", "Newton"], "Universal gravitation",
     "Isaac Newton set out the law of universal gravitation in his Principia, published in 1687."),
    ("what is the highest mountain in the world above sea level", ["Mount Everest", "Everest"], "Mount Everest",
     "Mount Everest, on the border of Nepal and China, is Earth's highest mountain above sea level, about 8,849 m."),
    ("what is the capital of germany", ["Berlin"], "Berlin",
     "Berlin is the capital and largest city of Germany."),
    ("who painted the starry night", ["Vincent van Gogh", "van Gogh"], "The Starry Night",
     "The Starry Night is an oil painting made by the Dutch painter Vincent van Gogh in 1889."),
    ("what is the largest hot desert in the world", ["Sahara", "Sahara Desert"], "Sahara",
     "The Sahara in North Africa is the largest hot desert in the world."),
    ("how many players does a soccer team have on the field", ["eleven", "11"], "Association football",
     "In association football each team has eleven players on the field, one of whom is the goalkeeper."),
    ("who wrote war and peace", ["Leo Tolstoy", "Tolstoy"], "War and Peace",
     "War and Peace is a novel by the Russian author Leo Tolstoy, first published in full in 1869."),
    ("what is the main language spoken in brazil", ["Portuguese"], "Brazil",
     "Portuguese is the official and most widely spoken language of Brazil."),
    ("who invented the world wide web", ["Tim Berners-Lee"], "World Wide Web",
     "The World Wide Web was invented by the English computer scientist Tim Berners-Lee at CERN in 1989."),
    ("what is the capital of egypt", ["Cairo"], "Cairo",
     "Cairo, on the Nile, is the capital and largest city of Egypt."),
    ("what is the chemical formula for water", ["H2O"], "Water",
     "A molecule of water is made of two hydrogen atoms and one oxygen atom, so its formula is H2O."),
    ("who was the first woman to win a nobel prize", ["Marie Curie"], "Marie Curie",
     "Marie Curie shared the 1903 Nobel Prize in Physics, becoming the first woman to win a Nobel Prize."),
    ("what is the capital of russia", ["Moscow"], "Moscow",
     "Moscow is the capital and largest city of Russia."),
    ("how many days are there in a leap year", ["366"], "Leap year",
     "A leap year has 366 days instead of 365, the extra day being added as 29 February."),
    ("who sculpted the statue of david in florence", ["Michelangelo"], "David",
     "David is a marble statue of the biblical hero carved by Michelangelo between 1501 and 1504 in Florence."),
    ("what is the largest animal that has ever lived", ["blue whale"], "Blue whale",
     "The blue whale is the largest animal known to have ever lived, reaching lengths of about 30 metres."),
    ("in which city is the statue of liberty", ["New York City", "New York"], "Statue of Liberty",
     "The Statue of Liberty stands on Liberty Island in New York Harbor, in New York City."),
    ("who wrote the divine comedy", ["Dante Alighieri", "Dante"], "Divine Comedy",
     "The Divine Comedy is a long Italian narrative poem by Dante Alighieri, completed around 1321."),
    ("what is the capital of kenya", ["Nairobi"], "Nairobi",
     "Nairobi is the capital and largest city of Kenya."),
    ("who introduced printing with movable type to europe", ["Johannes Gutenberg", "Gutenberg"], "Printing press",
     "In the mid-fifteenth century Johannes Gutenberg of Mainz introduced printing with movable metal type to Europe."),
    ("what organ pumps blood through the human body", ["heart"], "Heart",
     "The heart is a muscular organ that pumps blood through the blood vessels of the body."),
    ("how many sides does a hexagon have", ["six", "6"], "Hexagon",
     "A hexagon is a polygon with six sides and six angles."),
    ("what is the capital of argentina", ["Buenos Aires"], "Buenos Aires",
     "Buenos Aires, on the Río de la Plata, is the capital and largest city of Argentina."),
    ("who wrote the novel nineteen eighty four", ["George Orwell", "Orwell"], "Nineteen Eighty-Four",
     "Nineteen Eighty-Four is a dystopian novel by the English writer George Orwell, published in 1949."),
    ("what is the largest country in the world by area", ["Russia"], "Russia",
     "Russia is the largest country in the world by area, covering over 17 million square kilometres."),
]

DEV: list[Fact] = [
    ("what is the capital of france", ["Paris"], "Paris",
     "Paris, on the river Seine, is the capital and most populous city of France."),
    ("who wrote hamlet", ["William Shakespeare", "Shakespeare"], "Hamlet",
     "Hamlet, the tragedy of a Danish prince, was written by William Shakespeare around 1600."),
    ("what is the closest planet to the sun", ["Mercury"], "Mercury (planet)",
     "Mercury is the smallest planet in the Solar System and the closest to the Sun."),
    ("who painted the ceiling of the sistine chapel", ["Michelangelo"], "Sistine Chapel ceiling",
     "The ceiling of the Sistine Chapel in Vatican City was painted by Michelangelo between 1508 and 1512."),
    ("in what year did the titanic sink", ["1912"], "Titanic",
     "The RMS Titanic sank in the North Atlantic Ocean on 15 April 1912 after striking an iceberg."),
    ("what is the capital of china", ["Beijing"], "Beijing",
     "Beijing is the capital of the People's Republic of China."),
    ("who discovered the electron", ["J. J. Thomson", "Thomson"], "Electron",
     "The electron was discovered in 1897 by the British physicist J. J. Thomson in experiments with cathode rays."),
    ("what is the largest organ of the human body", ["skin"], "Skin",
     "The skin is the largest organ of the human body and protects it from the outside environment."),
    ("who wrote don quixote", ["Miguel de Cervantes", "Cervantes"], "Don Quixote",
     "Don Quixote is a Spanish novel by Miguel de Cervantes, published in two parts in 1605 and 1615."),
    ("what is the capital of india", ["New Delhi"], "New Delhi",
     "New Delhi is the capital of India and the seat of its government."),
    ("how many bones are in the adult human body", ["206"], "Human skeleton",
     "The skeleton of an adult human is made up of 206 bones."),
    ("who developed the first successful polio vaccine", ["Jonas Salk", "Salk"], "Polio vaccine",
     "The first effective polio vaccine was developed by Jonas Salk and declared safe and effective in 1955."),
    ("what is the capital of south korea", ["Seoul"], "Seoul",
     "Seoul is the capital and largest city of South Korea."),
    ("what is the largest continent", ["Asia"], "Asia",
     "Asia is the largest continent on Earth, both by area and by population."),
    ("who wrote the hobbit", ["J. R. R. Tolkien", "Tolkien"], "The Hobbit",
     "The Hobbit is a children's fantasy novel by the English author J. R. R. Tolkien, published in 1937."),
    ("which metal is liquid at room temperature", ["mercury"], "Mercury (element)",
     "Mercury is the only metal that is liquid at standard room temperature and pressure."),
    ("who was the first person in space", ["Yuri Gagarin", "Gagarin"], "Vostok 1",
     "On 12 April 1961 the Soviet cosmonaut Yuri Gagarin became the first human in outer space, aboard Vostok 1."),
    ("what is the capital of mexico", ["Mexico City"], "Mexico City",
     "Mexico City is the capital and largest city of Mexico."),
    ("who composed the moonlight sonata", ["Ludwig van Beethoven", "Beethoven"], "Moonlight Sonata",
     "The Moonlight Sonata is the popular name of the Piano Sonata No. 14 by Ludwig van Beethoven, completed in 1801."),
    ("what is the square root of 144", ["12", "twelve"], "Square root",
     "Because 12 multiplied by 12 equals 144, the square root of 144 is 12."),
    ("which planet is famous for its rings", ["Saturn"], "Saturn",
     "Saturn, the sixth planet from the Sun, is best known for its bright and extensive system of rings."),
    ("who wrote the declaration of independence", ["Thomas Jefferson", "Jefferson"], "Declaration of Independence",
     "Thomas Jefferson was the principal author of the Declaration of Independence, adopted on 4 July 1776."),
    ("what is the capital of turkey", ["Ankara"], "Ankara",
     "Ankara became the capital of Turkey in 1923; Istanbul is the country's largest city."),
    ("what is the chemical symbol for sodium", ["Na"], "Sodium",
     "Sodium is a soft, silvery metal with the chemical symbol Na, from the Latin natrium."),
    ("who invented the phonograph", ["Thomas Edison", "Edison"], "Phonograph",
     "Thomas Edison invented the phonograph in 1877, the first device that could both record and play back sound."),
    ("what is the longest river in south america", ["Amazon", "Amazon River"], "Amazon River",
     "The Amazon River flows across northern South America to the Atlantic Ocean; it is the continent's longest."),
    ("how many strings does a standard violin have", ["four", "4"], "Violin",
     "A standard violin has four strings, tuned in perfect fifths: G, D, A and E."),
    ("who wrote the great gatsby", ["F. Scott Fitzgerald", "Fitzgerald"], "The Great Gatsby",
     "The Great Gatsby is a 1925 novel by the American writer F. Scott Fitzgerald, set in the Jazz Age."),
    ("what is the capital of norway", ["Oslo"], "Oslo",
     "Oslo is the capital and most populous city of Norway."),
    ("what is the most abundant gas in earth's atmosphere", ["nitrogen"], "Atmosphere of Earth",
     "Nitrogen makes up about 78 percent of Earth's atmosphere, and oxygen about 21 percent."),
]

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"


def has_answer(text: str, answers: list[str]) -> bool:
    """True when some alias occurs in `text` as whole words (after SQuAD normalisation)."""
    words = f" {normalize_answer(text)} "
    return any(f" {norm} " in words for alias in answers if (norm := normalize_answer(alias)))


def build_records(facts: list[Fact], split: str) -> list[dict[str, Any]]:
    """DPR-style records with 3 passages each: the fact's own passage at rank (i % 3) plus 2 distractors."""
    records = []
    for index, (question, answers, title, text) in enumerate(facts):
        others = [fact for fact in facts if fact[0] != question and not has_answer(fact[3], answers)]
        random.Random(f"{split}-{index}").shuffle(others)  # str seeds are stable across runs and hash seeds
        ctxs = [{"title": t, "text": x, "hasanswer": False, "isgold": False} for _, _, t, x in others[:2]]
        if not has_answer(text, answers):  # a fact whose own passage lacks its answer is a typo here
            raise ValueError(f"passage of {question!r} does not contain any of {answers}")
        ctxs.insert(index % 3, {"title": title, "text": text, "hasanswer": True, "isgold": True})
        records.append({"question": question, "answers": answers, "ctxs": ctxs})
    return records


def write_sample(out_dir: Path = SAMPLE_DIR) -> list[Path]:
    """Write `nq-sample.train.jsonl` and `nq-sample.dev.jsonl` under `out_dir`."""
    paths = []
    for split, facts in (("train", TRAIN), ("dev", DEV)):
        path = Path(out_dir) / f"nq-sample.{split}.jsonl"
        atomic_write_jsonl(path, build_records(facts, split))
        paths.append(path)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write qalign's hand-made QA sample (DPR-style jsonl).")
    parser.add_argument("--out-dir", type=Path, default=SAMPLE_DIR, help=f"default: {SAMPLE_DIR}")
    for written in write_sample(parser.parse_args().out_dir):
        print(f"wrote {written}")
