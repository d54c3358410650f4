"""The looping-output rule on a corpus of real transcripts (never flagged) and loops (flagged).

Each real transcript comes with the length of audio it would take to say or sing it at an
ordinary pace: the rule judges a repetition against the audio it came from.
"""

from __future__ import annotations

import pytest

from mimo_watchd.looping import find_loop, tokens

GETTYSBURG = (
    "Four score and seven years ago our fathers brought forth on this continent, a new "
    "nation, conceived in Liberty, and dedicated to the proposition that all men are created "
    "equal. Now we are engaged in a great civil war, testing whether that nation, or any "
    "nation so conceived and so dedicated, can long endure. We are met on a great "
    "battle-field of that war. We have come to dedicate a portion of that field, as a final "
    "resting place for those who here gave their lives that that nation might live. It is "
    "altogether fitting and proper that we should do this. But, in a larger sense, we can not "
    "dedicate, we can not consecrate, we can not hallow this ground.")
GETTYSBURG_END = (
    "It is rather for us to be here dedicated to the great task remaining before us, that "
    "from these honored dead we take increased devotion to that cause for which they gave the "
    "last full measure of devotion, that we here highly resolve that these dead shall not "
    "have died in vain, that this nation, under God, shall have a new birth of freedom, and "
    "that government of the people, by the people, for the people, shall not perish from the "
    "earth.")
JFK = (
    "And so, my fellow Americans: ask not what your country can do for you, ask what you can "
    "do for your country. My fellow citizens of the world: ask not what America will do for "
    "you, but what together we can do for the freedom of man.")
PHONE = (
    "Hello? Hello? Hello? Can you hear me? Hello? Yeah, yeah, I can hear you now. Sorry, the "
    "line keeps cutting out. No, no, no, no, that's not what I said. I said Thursday, not "
    "Tuesday. Thursday. Yes. Yes. Yes, exactly. Okay. Okay, okay. Bye. Bye-bye. Bye.")
COUNTING = " ".join(
    ["One, two, three, four, five, six, seven, eight, nine, ten.",
     "Eleven, twelve, thirteen, fourteen, fifteen, sixteen, seventeen, eighteen, nineteen, "
     "twenty.",
     *[f"Twenty-{n}," for n in ("one", "two", "three", "four", "five", "six", "seven",
                                 "eight", "nine")],
     "thirty. Ready or not, here I come!"])
DANCE_COUNT = "And five, six, seven, eight! " + " ".join(
    ["One, two, three, four, five, six, seven, eight."] * 12) + " Great job, take a break."
ROW_YOUR_BOAT = " ".join(
    ["Row, row, row your boat, gently down the stream. Merrily, merrily, merrily, merrily, "
     "life is but a dream."] * 4)
JINGLE_BELLS = " ".join(
    ["Jingle bells, jingle bells, jingle all the way. Oh what fun it is to ride in a one-horse "
     "open sleigh, hey! Jingle bells, jingle bells, jingle all the way. Oh what fun it is to "
     "ride in a one-horse open sleigh."] * 2)
WHEELS_ON_THE_BUS = (
    "The wheels on the bus go round and round, round and round, round and round. The wheels "
    "on the bus go round and round, all through the town. The wipers on the bus go swish, "
    "swish, swish, swish, swish, swish, swish, swish, swish. The wipers on the bus go swish, "
    "swish, swish, all through the town. The horn on the bus goes beep, beep, beep, beep, "
    "beep, beep, beep, beep, beep. The horn on the bus goes beep, beep, beep, all through the "
    "town.")
OLD_MACDONALD = (
    "Old MacDonald had a farm, E-I-E-I-O. And on that farm he had a cow, E-I-E-I-O. With a moo "
    "moo here and a moo moo there, here a moo, there a moo, everywhere a moo moo. Old "
    "MacDonald had a farm, E-I-E-I-O.")
HAPPY_BIRTHDAY = ("Happy birthday to you, happy birthday to you, happy birthday dear Anna, "
                  "happy birthday to you! Hip hip hooray! Hip hip hooray! Hip hip hooray!")
LA_LA_REFRAIN = " ".join(["La la la la la la la la, la la la la la la la la."] * 4)
CHANT = " ".join(["Let's go, Rangers!"] * 30)
FAST_CHANT = "Go! " * 12 + "Yes! He scores!"
LAUGHTER = "Ha ha ha ha ha ha ha ha! Oh my God, that's hilarious. Ha ha ha ha."
VERY = "It was very, very, very, very, very, very cold that night, I mean really, really cold."
STAMMER = "I, I, I, I don't, I don't know, um, um, um, I mean, I mean, it's, it's, it's fine."
SHOPPING = ("Okay so we need eggs, milk, bread, butter, eggs, no wait we have eggs, cheese, "
            "apples, apples, the green ones, not the red ones, and, uh, coffee, coffee, coffee, "
            "do not forget the coffee.")
AUCTION = ("Twenty dollars, twenty dollars, now twenty-five, twenty-five, do I hear "
           "twenty-five? Twenty-five, thank you, now thirty, thirty, thirty, who'll give me "
           "thirty? Thirty! Thirty-five, thirty-five, going once, going twice, sold!")
JAZZ_SCAT = "Doo doo doo, doo doo doo doo, shoo-be-doo-wop, doo doo doo, shoo-be-doo-wop-wop."

JING_YE_SI = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
CLASSROOM = "同学们，跟我读。" + JING_YE_SI * 3 + "很好，再来一遍。" + JING_YE_SI
TWO_TIGERS = "".join(["两只老虎，两只老虎，跑得快，跑得快，"
                      "一只没有耳朵，一只没有尾巴，真奇怪，真奇怪。"] * 2)
JASMINE = ("好一朵美丽的茉莉花，好一朵美丽的茉莉花，芬芳美丽满枝桠，又香又白人人夸，"
           "让我来将你摘下，送给别人家，茉莉花呀茉莉花。")
PHONE_ZH = ("喂？喂？喂？听得到吗？听得到，听得到。好的好的好的。对对对对对，就是明天下午三点。"
            "嗯嗯嗯。行，那就这样，拜拜拜拜。")
COUNTING_ZH = ("一、二、三、四、五、六、七、八、九、十，十一、十二、十三、十四、十五，"
               "好了，我要来找你们了！")
EXERCISE_ZH = "".join(["一二三四，二二三四，三二三四，四二三四，"
                       "五二三四，六二三四，七二三四，八二三四。"] * 4)
LAUGHTER_ZH = "哈哈哈哈哈哈哈哈哈哈，你太逗了，哈哈哈哈。"
CHANT_ZH = "加油！" * 30
LUNYU = ("子曰：学而时习之，不亦说乎？有朋自远方来，不亦乐乎？人不知而不愠，不亦君子乎？"
         "子曰：温故而知新，可以为师矣。子曰：学而不思则罔，思而不学则殆。"
         "子曰：知之为知之，不知为不知，是知也。")
WEATHER_ZH = ("各位观众晚上好，下面是明天的天气预报。明天白天，北京晴转多云，北风二三级，"
              "最高气温二十八度。明天夜间，多云转阴，局部地区有小雨，最低气温十八度。"
              "请大家注意添加衣物，出行携带雨具。")
THANKS_ZH = "谢谢，谢谢，谢谢大家！谢谢！真的非常感谢大家今天能来。"

# (name, transcript, seconds of audio it takes at an ordinary pace)
REAL: list[tuple[str, str, float]] = [
    ("gettysburg", GETTYSBURG, 60.0),
    ("gettysburg-end", GETTYSBURG_END, 35.0),
    ("jfk", JFK, 22.0),
    ("phone call", PHONE, 25.0),
    ("counting", COUNTING, 25.0),
    ("dance count", DANCE_COUNT, 40.0),
    ("row your boat", ROW_YOUR_BOAT, 40.0),
    ("jingle bells", JINGLE_BELLS, 40.0),
    ("wheels on the bus", WHEELS_ON_THE_BUS, 40.0),
    ("old macdonald", OLD_MACDONALD, 20.0),
    ("happy birthday", HAPPY_BIRTHDAY, 25.0),
    ("la la refrain", LA_LA_REFRAIN, 20.0),
    ("chant", CHANT, 60.0),
    ("fast chant", FAST_CHANT, 5.0),
    ("laughter", LAUGHTER, 8.0),
    ("very", VERY, 6.0),
    ("stammer", STAMMER, 8.0),
    ("shopping list", SHOPPING, 15.0),
    ("auction", AUCTION, 12.0),
    ("scat", JAZZ_SCAT, 6.0),
    ("jing ye si", JING_YE_SI, 8.0),
    ("classroom", CLASSROOM, 30.0),
    ("two tigers", TWO_TIGERS, 25.0),
    ("jasmine", JASMINE, 35.0),
    ("phone call zh", PHONE_ZH, 12.0),
    ("counting zh", COUNTING_ZH, 10.0),
    ("exercise count zh", EXERCISE_ZH, 60.0),
    ("laughter zh", LAUGHTER_ZH, 5.0),
    ("chant zh", CHANT_ZH, 24.0),
    ("lunyu", LUNYU, 20.0),
    ("weather zh", WEATHER_ZH, 18.0),
    ("thanks zh", THANKS_ZH, 6.0),
]

# (name, looping transcript, seconds of audio it was made from)
LOOPS: list[tuple[str, str, float]] = [
    ("thank you to the cap", "Thank you. " * 400, 60.0),
    ("sentence after a real start",
     GETTYSBURG[:200] + " We are met on a great battle-field of that war." * 40, 60.0),
    ("phrase dozens of times at a normal pace", "You know what I mean? " * 30, 40.0),
    ("one word", "the " * 120, 10.0),
    ("emulator fault", " ".join(["Alpha bravo charlie delta."] * 40), 2.0),
    ("zh sentence", WEATHER_ZH[:40] + "我们今天来讨论一下这个问题。" * 60, 60.0),
    ("zh long sentence", "请大家注意添加衣物，出行携带雨具，注意安全。" * 30, 45.0),
    ("zh one character", "啊" * 300, 30.0),
    ("zh chant far too fast", "加油！" * 80, 10.0),
    ("mixed", "好的 okay " * 50, 15.0),
]


@pytest.mark.parametrize(("name", "text", "seconds"), REAL, ids=[r[0] for r in REAL])
def test_real_transcripts_are_not_loops(name: str, text: str, seconds: float) -> None:
    """Ordinary repetition in real speech, dialogue and songs is never taken for a loop."""
    assert find_loop(text, seconds) is None, name


@pytest.mark.parametrize(("name", "text", "seconds"), LOOPS, ids=[r[0] for r in LOOPS])
def test_loops_are_found(name: str, text: str, seconds: float) -> None:
    """A phrase repeated more, or faster, than the audio could hold is a loop."""
    loop = find_loop(text, seconds)
    assert loop is not None, name
    assert loop.copies >= 8 and loop.phrase


def test_the_loop_names_its_primitive_phrase() -> None:
    """The phrase reported is the shortest unit ("thank you", not "thank you thank you")."""
    loop = find_loop("Thank you. " * 100, 10.0)
    assert loop is not None and loop.phrase == "thank you" and loop.copies == 100
    assert loop.describe(10.0) == "looping output: 'thank you' 100 times in 10.0 s of audio"
    zh = find_loop("好的 okay " * 50, 15.0)
    assert zh is not None and zh.phrase == "好的 okay"


def test_tokens_are_words_and_cjk_characters() -> None:
    """Words are lower-cased without punctuation; each CJK character is a token."""
    assert tokens("Hello, World! 你好。Na-na") == ["hello", "world", "你", "好", "na", "na"]


def test_the_same_repetition_is_a_loop_only_in_too_little_audio() -> None:
    """Thirty copies of a short phrase fit a minute of chanting but not five seconds."""
    assert find_loop(CHANT, 60.0) is None
    assert find_loop(CHANT, 5.0) is not None
