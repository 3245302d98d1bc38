"""Small hand-written knowledge tables behind the ``ss_mc`` items (see :mod:`tasks.evaluation.suites.mc_items`).

Each table is chosen so that a question built from it has exactly one right choice among the table's
other entries: a word is in one antonym pair only and has no synonym elsewhere in the table, a thing
belongs to one category only, weights and durations differ by a large factor between neighbours.
"""

from __future__ import annotations

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]  # fmt: skip
MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # a year that is not a leap year

# Antonym pairs by kind of word; the wrong choices of an antonym question are words of the same kind.
OPPOSITES = {
    "adjective": [
        ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"), ("open", "closed"),
        ("early", "late"), ("full", "empty"), ("hard", "soft"), ("wet", "dry"), ("young", "old"), ("strong", "weak"),
        ("rich", "poor"), ("loud", "quiet"), ("tall", "short"), ("thick", "thin"), ("clean", "dirty"),
        ("true", "false"), ("simple", "complex"), ("cheap", "expensive"), ("near", "far"), ("asleep", "awake"),
        ("wide", "narrow"), ("deep", "shallow"), ("sharp", "blunt"), ("sweet", "sour"), ("smooth", "rough"),
        ("brave", "cowardly"), ("polite", "rude"), ("alive", "dead"), ("safe", "dangerous"), ("healthy", "sick"),
        ("fresh", "stale"), ("tight", "loose"), ("ancient", "modern"), ("public", "private"),
        ("generous", "selfish"), ("first", "last"),
    ],
    "verb": [
        ("win", "lose"), ("buy", "sell"), ("push", "pull"), ("begin", "end"), ("give", "take"), ("arrive", "leave"),
        ("remember", "forget"), ("accept", "refuse"), ("love", "hate"), ("laugh", "cry"), ("increase", "decrease"),
        ("borrow", "lend"), ("float", "sink"), ("rise", "fall"), ("whisper", "shout"), ("import", "export"),
    ],
    "other": [
        ("up", "down"), ("above", "below"), ("inside", "outside"), ("day", "night"), ("north", "south"),
        ("east", "west"), ("friend", "enemy"), ("question", "answer"), ("left", "right"), ("always", "never"),
        ("before", "after"), ("top", "bottom"), ("front", "back"), ("entrance", "exit"), ("maximum", "minimum"),
        ("success", "failure"),
    ],
}  # fmt: skip

# (word, other word): the other word is close enough to an opposite of the word that it is never one of the
# wrong choices of "What is the opposite of '<word>'?".
NEAR_OPPOSITES = [
    ("rough", "soft"), ("rough", "hard"), ("whisper", "loud"), ("whisper", "quiet"), ("shout", "quiet"),
    ("shout", "whisper"), ("loud", "whisper"), ("quiet", "shout"), ("soft", "rough"), ("soft", "loud"),
    ("borrow", "give"), ("borrow", "take"), ("lend", "take"), ("lend", "sell"), ("give", "borrow"),
    ("take", "lend"), ("buy", "lend"), ("sell", "borrow"), ("rise", "sink"), ("rise", "decrease"),
    ("fall", "float"), ("fall", "increase"), ("float", "fall"), ("sink", "rise"), ("increase", "fall"),
    ("decrease", "rise"), ("first", "end"), ("last", "begin"), ("begin", "last"), ("end", "first"),
    ("up", "below"), ("up", "bottom"), ("down", "above"), ("down", "top"), ("above", "down"), ("below", "up"),
    ("top", "down"), ("top", "below"), ("bottom", "up"), ("bottom", "above"), ("early", "after"),
    ("late", "before"), ("before", "late"), ("after", "early"), ("early", "slow"), ("win", "failure"),
    ("lose", "success"), ("success", "lose"), ("failure", "win"), ("old", "modern"), ("young", "ancient"),
    ("ancient", "young"), ("modern", "old"), ("stale", "young"), ("fresh", "old"), ("wide", "thin"),
    ("thin", "wide"), ("narrow", "thick"), ("thick", "narrow"), ("short", "big"), ("tall", "small"),
    ("big", "short"), ("small", "tall"), ("laugh", "sad"), ("happy", "cry"), ("sad", "laugh"), ("cry", "happy"),
    ("healthy", "dead"), ("alive", "sick"), ("dead", "awake"), ("asleep", "alive"), ("closed", "public"),
    ("private", "open"), ("open", "private"), ("public", "closed"), ("far", "inside"), ("outside", "near"),
    ("dirty", "fresh"), ("stale", "clean"), ("dangerous", "healthy"), ("sick", "safe"), ("simple", "hard"),
    ("hard", "simple"), ("sick", "alive"), ("dead", "healthy"), ("old", "fresh"), ("blunt", "polite"),
    ("polite", "blunt"), ("give", "accept"), ("take", "refuse"), ("refuse", "take"), ("increase", "sink"),
    ("above", "bottom"), ("below", "top"),
]  # fmt: skip

CATEGORIES = {
    "fruit": ["apple", "banana", "cherry", "grape", "mango", "pear", "peach", "plum", "lemon", "orange"],
    "vegetable": ["carrot", "potato", "onion", "cabbage", "spinach", "broccoli", "lettuce", "celery", "pea", "leek"],
    "mammal": ["dog", "horse", "tiger", "rabbit", "elephant", "giraffe", "zebra", "wolf", "bear", "fox"],
    "bird": ["sparrow", "eagle", "parrot", "robin", "pigeon", "crow", "swan", "penguin", "flamingo", "ostrich"],
    "vehicle": ["car", "bus", "truck", "bicycle", "train", "motorcycle", "tram", "van", "scooter", "tractor"],
    "musical instrument": ["piano", "violin", "guitar", "flute", "drum", "trumpet", "cello", "harp", "clarinet",
                           "banjo"],
    "piece of furniture": ["chair", "table", "sofa", "bed", "desk", "wardrobe", "bookshelf", "stool", "dresser",
                           "bench"],
    "tool": ["hammer", "saw", "screwdriver", "wrench", "drill", "chisel", "pliers", "shovel", "rake", "axe"],
    "piece of clothing": ["shirt", "jacket", "scarf", "sock", "coat", "sweater", "skirt", "glove", "hat", "dress"],
    "sport": ["football", "tennis", "golf", "hockey", "basketball", "baseball", "rugby", "volleyball", "badminton",
              "skiing"],
    "body part": ["elbow", "knee", "shoulder", "ankle", "wrist", "finger", "ear", "nose", "chin", "toe"],
    "drink": ["milk", "tea", "coffee", "lemonade", "cocoa", "juice", "soda", "smoothie", "milkshake", "water"],
    "flower": ["rose", "tulip", "daisy", "lily", "sunflower", "orchid", "daffodil", "poppy", "carnation", "dandelion"],
}  # fmt: skip

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Poland", "Warsaw"),
    ("Hungary", "Budapest"), ("Kenya", "Nairobi"), ("Argentina", "Buenos Aires"), ("Peru", "Lima"),
    ("Mexico", "Mexico City"), ("Thailand", "Bangkok"), ("South Korea", "Seoul"), ("Australia", "Canberra"),
    ("Turkey", "Ankara"), ("Denmark", "Copenhagen"), ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"),
    ("Chile", "Santiago"), ("Colombia", "Bogota"), ("Cuba", "Havana"), ("Iceland", "Reykjavik"),
    ("the Czech Republic", "Prague"), ("Vietnam", "Hanoi"), ("the Philippines", "Manila"), ("Iran", "Tehran"),
    ("Saudi Arabia", "Riyadh"), ("Morocco", "Rabat"), ("Nigeria", "Abuja"), ("Ghana", "Accra"),
    ("Ethiopia", "Addis Ababa"), ("New Zealand", "Wellington"), ("Romania", "Bucharest"), ("Brazil", "Brasilia"),
    ("Venezuela", "Caracas"), ("Pakistan", "Islamabad"), ("Croatia", "Zagreb"), ("Bulgaria", "Sofia"),
    ("Nepal", "Kathmandu"), ("Qatar", "Doha"), ("Switzerland", "Bern"), ("Uruguay", "Montevideo"),
]  # fmt: skip
# Well-known cities that are not the capital: the most tempting wrong answer for their country.
NOT_CAPITAL = {"Australia": "Sydney", "Canada": "Toronto", "Turkey": "Istanbul", "Brazil": "Rio de Janeiro",
               "Switzerland": "Zurich", "New Zealand": "Auckland", "Nigeria": "Lagos", "Morocco": "Casablanca",
               "India": "Mumbai", "China": "Shanghai", "Pakistan": "Karachi", "Vietnam": "Ho Chi Minh City",
               "Spain": "Barcelona", "Italy": "Milan", "Germany": "Munich", "Japan": "Osaka"}  # fmt: skip

SOUNDS = [("dog", "bark"), ("cat", "meow"), ("cow", "moo"), ("sheep", "baa"), ("duck", "quack"),
          ("lion", "roar"), ("snake", "hiss"), ("horse", "neigh"), ("pig", "oink"), ("owl", "hoot"),
          ("bee", "buzz"), ("frog", "croak"), ("donkey", "bray"), ("wolf", "howl"), ("mouse", "squeak")]  # fmt: skip
YOUNG = [("dog", "puppy"), ("cat", "kitten"), ("cow", "calf"), ("horse", "foal"), ("sheep", "lamb"),
         ("hen", "chick"), ("bear", "cub"), ("duck", "duckling"), ("goat", "kid"), ("frog", "tadpole"),
         ("kangaroo", "joey"), ("goose", "gosling"), ("deer", "fawn"), ("pig", "piglet")]  # fmt: skip
FEATURES = [
    ("Which animal has a trunk?", "an elephant"), ("Which animal has a very long neck?", "a giraffe"),
    ("Which animal looks like a horse with black and white stripes?", "a zebra"),
    ("Which animal carries its shell on its back and leaves a slimy trail?", "a snail"),
    ("Which animal has a hump on its back and lives in the desert?", "a camel"),
    ("Which animal carries its baby in a pouch?", "a kangaroo"),
    ("Which animal spins a web to catch insects?", "a spider"),
    ("Which animal has eight arms and lives in the sea?", "an octopus"),
    ("Which animal has a mane and is called the king of the jungle?", "a lion"),
    ("Which animal has sharp quills all over its back?", "a porcupine"),
    ("Which bird cannot fly and lives in icy Antarctica?", "a penguin"),
    ("Which animal sleeps hanging upside down in caves?", "a bat"),
    ("Which animal has black and white fur and eats bamboo?", "a panda"),
    ("Which animal has pincers and walks sideways?", "a crab"),
    ("Which animal swings from tree to tree using its long arms and tail?", "a monkey"),
    ("Which animal is the largest animal that has ever lived?", "a blue whale"),
]  # fmt: skip

SHAPES = [("triangle", 3), ("square", 4), ("pentagon", 5), ("hexagon", 6), ("heptagon", 7), ("octagon", 8),
          ("rectangle", 4), ("decagon", 10)]  # fmt: skip
GEOMETRY = [("How many faces does a cube have?", "6", ["4", "8", "12"]),
            ("How many edges does a cube have?", "12", ["6", "8", "10"]),
            ("How many corners does a cube have?", "8", ["4", "6", "12"]),
            ("How many degrees are in a right angle?", "90", ["45", "180", "100"]),
            ("How many degrees are in a full circle?", "360", ["180", "100", "90"]),
            ("How many degrees do the angles of a triangle add up to?", "180", ["90", "360", "270"]),
            ("What is the name of a shape whose points are all the same distance from its center?", "a circle",
             ["a square", "a triangle", "a rectangle"]),
            ("What is the name of a solid shape like a ball?", "a sphere",
             ["a cube", "a cone", "a cylinder"])]  # fmt: skip

PLURALS = [("mouse", "mice", ["mouses", "mices", "mousen"]), ("child", "children", ["childs", "childes", "childrens"]),
           ("foot", "feet", ["foots", "feets", "footes"]), ("tooth", "teeth", ["tooths", "teeths", "toothes"]),
           ("goose", "geese", ["gooses", "geeses", "goosen"]), ("man", "men", ["mans", "mens", "manes"]),
           ("woman", "women", ["womans", "womens", "womanes"]),
           ("person", "people", ["persons", "peoples", "persones"]),
           ("leaf", "leaves", ["leafs", "leafes", "leavs"]), ("knife", "knives", ["knifes", "knive", "knifies"]),
           ("ox", "oxen", ["oxes", "oxs", "oxens"]), ("cactus", "cacti", ["cactuss", "cactis", "cactes"]),
           ("sheep", "sheep", ["sheeps", "sheepes", "sheepen"]), ("wolf", "wolves", ["wolfs", "wolfes", "wolvs"]),
           ("wife", "wives", ["wifes", "wifs", "wivs"]), ("half", "halves", ["halfs", "halfes", "halvs"]),
           ("loaf", "loaves", ["loafs", "loafes", "loavs"]), ("shelf", "shelves", ["shelfs", "shelfes", "shelvs"]),
           ("thief", "thieves", ["thiefs", "thiefes", "thievs"]), ("louse", "lice", ["louses", "lices", "lousen"]),
           ("crisis", "crises", ["crisises", "crisis", "crisiss"]), ("city", "cities", ["citys", "cityes", "citis"]),
           ("baby", "babies", ["babys", "babyes", "babis"]), ("box", "boxes", ["boxs", "boxen", "boxies"]),
           ("potato", "potatoes", ["potatos", "potatoe", "potatose"]),
           ("calf", "calves", ["calfs", "calfes", "calvs"])]  # fmt: skip
PAST = [("go", "went"), ("eat", "ate"), ("run", "ran"), ("see", "saw"), ("take", "took"), ("write", "wrote"),
        ("sing", "sang"), ("swim", "swam"), ("drink", "drank"), ("buy", "bought"), ("think", "thought"),
        ("bring", "brought"), ("catch", "caught"), ("teach", "taught"), ("fly", "flew"), ("throw", "threw"),
        ("grow", "grew"), ("know", "knew"), ("draw", "drew"), ("drive", "drove"), ("ride", "rode"),
        ("speak", "spoke"), ("break", "broke"), ("choose", "chose"), ("freeze", "froze"), ("steal", "stole"),
        ("sleep", "slept"), ("keep", "kept"), ("feel", "felt"), ("leave", "left"), ("build", "built"),
        ("send", "sent"), ("spend", "spent"), ("lose", "lost"), ("find", "found"), ("hold", "held"),
        ("stand", "stood"), ("tell", "told"), ("sell", "sold"), ("make", "made"), ("begin", "began"),
        ("ring", "rang"), ("sit", "sat"), ("give", "gave"), ("forget", "forgot"), ("wear", "wore"),
        ("fall", "fell"), ("feed", "fed"), ("meet", "met"), ("fight", "fought"), ("dig", "dug")]  # fmt: skip

# Conversions between units: (large unit plural, small unit plural, small units per large unit).
UNITS = [("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7),
         ("meters", "centimeters", 100), ("kilometers", "meters", 1000), ("kilograms", "grams", 1000),
         ("liters", "milliliters", 1000), ("years", "months", 12), ("centimeters", "millimeters", 10),
         ("feet", "inches", 12), ("yards", "feet", 3), ("decades", "years", 10), ("centuries", "years", 100),
         ("dozen", "eggs", 12)]  # fmt: skip
# Lightest to heaviest; neighbours differ by a factor of about three or more.
WEIGHTS = ["a feather", "a coin", "an apple", "a brick", "a bicycle", "a grown man", "a piano", "a car", "a bus",
           "a blue whale"]  # fmt: skip
DURATIONS = ["a second", "a minute", "an hour", "a day", "a week", "a month", "a year", "a decade", "a century",
             "a millennium"]  # fmt: skip
ALPHA_WORDS = ["anchor", "apple", "basket", "bridge", "button", "candle", "carpet", "castle", "desert", "dragon",
               "eagle", "engine", "feather", "forest", "garden", "guitar", "hammer", "harbor", "island", "jacket",
               "kettle", "ladder", "lemon", "meadow", "mirror", "needle", "ocean", "orange", "pencil", "pepper",
               "rabbit", "river", "saddle", "silver", "tiger", "tunnel", "umbrella", "valley", "window",
               "yogurt"]  # fmt: skip

COLORS = [("What color is a ripe banana?", "yellow", ["blue", "purple", "black"]),
          ("What color is fresh snow?", "white", ["green", "brown", "red"]),
          ("What color is coal?", "black", ["white", "yellow", "pink"]),
          ("What color is a clear sky on a sunny day?", "blue", ["green", "brown", "orange"]),
          ("What color is a ripe tomato?", "red", ["blue", "white", "gray"]),
          ("What color is a carrot?", "orange", ["blue", "pink", "gray"]),
          ("What color is milk chocolate?", "brown", ["blue", "green", "white"]),
          ("What color do you get when you mix blue and yellow paint?", "green", ["purple", "orange", "pink"]),
          ("What color do you get when you mix red and white paint?", "pink", ["green", "blue", "brown"]),
          ("What color do you get when you mix red and yellow paint?", "orange", ["purple", "green", "blue"]),
          ("What color do you get when you mix red and blue paint?", "purple", ["green", "yellow", "orange"]),
          ("What color do you get when you mix black and white paint?", "gray", ["pink", "green", "yellow"]),
          ("What color is a fire truck usually?", "red", ["pink", "purple", "brown"]),
          ("What color are most leaves in summer?", "green", ["blue", "purple", "white"]),
          ("What color is the inside of a ripe watermelon?", "red", ["blue", "black", "gray"])]  # fmt: skip

EVERYDAY = [
    ("Where do you keep milk so that it stays cold?", "in a refrigerator",
     ["in an oven", "on a windowsill", "in a drawer"]),
    ("What do you use to cut paper?", "scissors", ["a spoon", "a pillow", "a towel"]),
    ("What do people use to dry themselves after a shower?", "a towel", ["a fork", "a pencil", "a brick"]),
    ("What falls from clouds when it rains?", "water", ["sand", "milk", "sugar"]),
    ("What do plants need from the sun to grow?", "light", ["noise", "salt", "plastic"]),
    ("What do you wear on your feet to walk outside?", "shoes", ["gloves", "earrings", "a hat"]),
    ("Where does a fish live?", "in water", ["in a tree", "in the sky", "in the desert sand"]),
    ("What do you use to write on paper?", "a pen", ["a plate", "a sock", "a cup"]),
    ("What happens to ice when it gets warm?", "it melts", ["it freezes", "it burns", "it grows"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("What do you need to open a locked door?", "a key", ["a spoon", "a blanket", "a candle"]),
    ("Which season usually has the coldest weather?", "winter", ["summer", "spring", "autumn"]),
    ("What do you use to see in the dark?", "a flashlight", ["a hammer", "a mirror", "a pillow"]),
    ("What is the usual color of grass?", "green", ["purple", "orange", "black"]),
    ("What do people use an umbrella for?", "to stay dry in the rain",
     ["to cook food", "to tell the time", "to dig holes"]),
    ("Where do people usually sleep at night?", "in a bed", ["in a bathtub", "on a roof", "in a fridge"]),
    ("What do you use to brush your teeth?", "a toothbrush", ["a comb", "a broom", "a paintbrush"]),
    ("What do cows eat most of the time?", "grass", ["meat", "fish", "stones"]),
    ("What does a thermometer measure?", "temperature", ["weight", "length", "speed"]),
    ("What do you call frozen water?", "ice", ["steam", "sand", "glass"]),
    ("What do you use to call someone who is far away?", "a telephone", ["a spoon", "a ladder", "a carpet"]),
    ("What do you put on an envelope before you mail it?", "a stamp", ["a button", "a feather", "a leaf"]),
    ("What keeps your hands warm in winter?", "gloves", ["sandals", "sunglasses", "a belt"]),
    ("What do you use to sweep the floor?", "a broom", ["a fork", "a kite", "a pillow"]),
    ("What do you use to boil water for tea?", "a kettle", ["a toaster", "a blender", "a freezer"]),
    ("What does a clock show?", "the time", ["the weather", "the price of bread", "the distance to school"]),
    ("What do you need to take a photograph?", "a camera", ["a shovel", "a whistle", "a ruler"]),
    ("Which meal do people usually eat in the morning?", "breakfast", ["lunch", "dinner", "supper"]),
    ("What do you usually use to eat soup?", "a spoon", ["a knife", "a comb", "a straw hat"]),
    ("What do most birds build to lay their eggs in?", "a nest", ["a tunnel", "a web", "a hive"]),
    ("What do you wear to protect your eyes from bright sunlight?", "sunglasses", ["earmuffs", "a scarf", "mittens"]),
    ("What do you use to measure how long something is?", "a ruler", ["a scale", "a thermometer", "a clock"]),
    ("What do you use to find out how heavy something is?", "a scale", ["a ruler", "a thermometer", "a calendar"]),
    ("Where does bread usually get baked?", "in an oven", ["in a freezer", "in a sink", "in a closet"]),
    ("What do you usually do with a book?", "read it", ["drink it", "plant it", "wear it"]),
    ("What do people build to cross a river without getting wet?", "a bridge", ["a ladder", "a chimney", "a fence"]),
    ("What should a driver do when a traffic light turns red?", "stop", ["speed up", "turn around", "honk loudly"]),
    ("What do you use to carry water from a well?", "a bucket", ["a net", "a sieve", "an envelope"]),
    ("What grows on an apple tree?", "apples", ["bananas", "potatoes", "coconuts"]),
    ("What do hens lay?", "eggs", ["milk", "wool", "honey"]),
    ("Which animal gives us wool?", "a sheep", ["a chicken", "a fish", "a bee"]),
    ("What do you use to dig a hole in the garden?", "a shovel", ["a spoon", "a brush", "a pencil"]),
    ("When do you usually see the stars?", "at night", ["at noon", "in the early afternoon", "at lunchtime"]),
    ("What do you use to wash your hands?", "soap and water", ["sand and oil", "milk and sugar", "paint and glue"]),
    ("Where do you put food to keep it frozen?", "in a freezer", ["in an oven", "in a cupboard", "in a toaster"]),
    ("What do you look into to see your own reflection?", "a mirror", ["a blanket", "a brick", "a sponge"]),
    ("What do you use to hit a nail into wood?", "a hammer", ["a spoon", "a pillow", "a sponge"]),
    ("What do you wear to stay dry when it rains?", "a raincoat", ["a swimsuit", "sandals", "a paper crown"]),
    ("What does water turn into when it boils?", "steam", ["ice", "sand", "glass"]),
    ("What do you need to light a candle?", "a match", ["an ice cube", "a wet towel", "a feather"]),
    ("Where do you go to swim indoors?", "a swimming pool", ["a bakery", "a library", "a garage"]),
    ("What do you use to keep your trousers from falling down?", "a belt", ["a necklace", "a scarf", "a bracelet"]),
]  # fmt: skip
