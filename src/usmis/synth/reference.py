"""Fixed reference data of the synthetic nation: regions, tariffs, drugs, diagnoses, tests.

Every figure here is invented but plausible for Kazakhstan (prices in tenge).  The same
tables are written out by the registry sources (reg_tariffs, reg_drug_doses, …), so the
oversight rules read them from the feeds, never from this module.
"""

from __future__ import annotations

from dataclasses import dataclass

# (region name in Russian as registries write it, main city, population weight, HIS id)
# Weights follow the 2024 population of the 17 oblasts and 3 republican cities (millions).
REGIONS: tuple[tuple[str, str, float, str], ...] = (
    ("г. Алматы", "Алматы", 2.2, "his_almaty"),
    ("г. Астана", "Астана", 1.4, "his_astana"),
    ("г. Шымкент", "Шымкент", 1.2, "his_shymkent"),
    ("Туркестанская область", "Туркестан", 2.1, "his_shymkent"),
    ("Алматинская область", "Қонаев", 1.5, "his_almaty"),
    ("Жамбылская область", "Тараз", 1.2, "his_shymkent"),
    ("Карагандинская область", "Караганда", 1.1, "his_karaganda"),
    ("Восточно-Казахстанская область", "Усть-Каменогорск", 0.7, "his_karaganda"),
    ("Актюбинская область", "Актобе", 0.9, "his_aktobe"),
    ("Кызылординская область", "Кызылорда", 0.8, "his_shymkent"),
    ("Костанайская область", "Костанай", 0.8, "his_karaganda"),
    ("Павлодарская область", "Павлодар", 0.75, "his_karaganda"),
    ("Мангистауская область", "Актау", 0.75, "his_aktobe"),
    ("Акмолинская область", "Кокшетау", 0.8, "his_astana"),
    ("Атырауская область", "Атырау", 0.7, "his_aktobe"),
    ("Западно-Казахстанская область", "Уральск", 0.7, "his_aktobe"),
    ("Абайская область", "Семей", 0.6, "his_karaganda"),
    ("Северо-Казахстанская область", "Петропавловск", 0.5, "his_astana"),
    ("Жетысуская область", "Талдыкорган", 0.7, "his_almaty"),
    ("Улытауская область", "Жезказган", 0.2, "his_karaganda"),
)

# Age pyramid (share of the population by 5-year band at the start of the period).
AGE_BANDS: tuple[tuple[int, float], ...] = (
    (0, 9.5), (5, 9.5), (10, 8.0), (15, 6.5), (20, 6.0), (25, 7.0), (30, 8.3), (35, 7.8),
    (40, 7.0), (45, 6.0), (50, 5.5), (55, 5.5), (60, 4.8), (65, 3.6), (70, 2.4), (75, 1.2),
    (80, 0.8), (85, 0.4), (90, 0.1),
)


def annual_mortality(age: int) -> float:
    """Probability of dying within a year at this age (rough Kazakh life table)."""
    if age < 1:
        return 0.008
    if age < 40:
        return 0.0015
    if age < 60:
        return 0.006
    if age < 70:
        return 0.018
    if age < 80:
        return 0.045
    return 0.11


@dataclass(frozen=True, slots=True)
class Tariff:
    code: str
    name: str
    category: str  # visit, screening, procedure, lab, inpatient_case, capitation
    price: int  # tenge per unit
    minutes: int  # standard minutes per unit
    sex: str  # "" any, "M" or "F"
    min_age: int
    max_age: int
    max_units_per_day: int
    expensive: bool = False
    speciality: str = ""  # who performs it in a polyclinic


TARIFFS: tuple[Tariff, ...] = (
    Tariff("A01.001", "Приём терапевта / ВОП", "visit", 3500, 15, "", 18, 120, 1, False,
           "therapist"),
    Tariff("A01.002", "Приём педиатра", "visit", 3500, 15, "", 0, 17, 1, False,
           "pediatrician"),
    Tariff("A01.003", "Приём гинеколога", "visit", 4200, 20, "F", 14, 120, 1, False,
           "gynecologist"),
    Tariff("A01.004", "Приём уролога", "visit", 4200, 20, "M", 14, 120, 1, False, "urologist"),
    Tariff("A01.005", "Консультация кардиолога", "visit", 5100, 25, "", 18, 120, 1, False,
           "cardiologist"),
    Tariff("A01.006", "Консультация эндокринолога", "visit", 5100, 25, "", 18, 120, 1, False,
           "endocrinologist"),
    Tariff("A02.001", "Цитологический скрининг шейки матки", "screening", 6800, 20, "F", 30, 70,
           1, False, "gynecologist"),
    Tariff("A02.002", "Скрининг рака предстательной железы", "screening", 5500, 15, "M", 50, 70,
           1, False, "urologist"),
    Tariff("A02.003", "Маммографический скрининг", "screening", 9800, 20, "F", 40, 70, 1, False,
           "gynecologist"),
    Tariff("A03.001", "Сеанс физиотерапии", "procedure", 2200, 20, "", 0, 120, 2, False, "nurse"),
    Tariff("A03.002", "Внутримышечная инъекция", "procedure", 900, 5, "", 0, 120, 3, False,
           "nurse"),
    Tariff("A03.003", "ЭКГ", "procedure", 2700, 15, "", 0, 120, 2, False, "nurse"),
    Tariff("A04.001", "Приём в приёмном отделении", "visit", 12000, 30, "", 0, 120, 1, False,
           "emergency"),
    Tariff("B03.001", "Общий анализ крови", "lab", 2100, 5, "", 0, 120, 1),
    Tariff("B03.002", "Биохимический анализ крови", "lab", 4300, 5, "", 0, 120, 1),
    Tariff("B03.003", "Гликированный гемоглобин", "lab", 3100, 5, "", 0, 120, 1),
    Tariff("B03.004", "Липидограмма", "lab", 3900, 5, "", 0, 120, 1),
    Tariff("B03.005", "Общий анализ мочи", "lab", 1500, 5, "", 0, 120, 1),
    Tariff("CAP01", "Подушевой норматив ПМСП, на 1 прикреплённого в месяц", "capitation", 1150, 0,
           "", 0, 120, 1),
)

# Inpatient case groups: (ICD-10 prefix, base code, name, base price, expensive price,
# sex, min age, max age).  The expensive variant is the same group "with complications".
CASE_GROUPS: tuple[tuple[str, str, str, int, int, str, int, int], ...] = (
    ("J18", "KZG-101", "Пневмония", 180_000, 420_000, "", 0, 120),
    ("I21", "KZG-201", "Острый инфаркт миокарда", 250_000, 780_000, "", 18, 120),
    ("I63", "KZG-202", "Инфаркт мозга", 300_000, 900_000, "", 18, 120),
    ("E11", "KZG-301", "Сахарный диабет 2 типа", 150_000, 380_000, "", 18, 120),
    ("O80", "KZG-401", "Роды", 160_000, 410_000, "F", 15, 49),
    ("K35", "KZG-501", "Острый аппендицит", 210_000, 520_000, "", 0, 120),
    ("S72", "KZG-601", "Перелом бедренной кости", 260_000, 640_000, "", 0, 120),
    ("J44", "KZG-701", "ХОБЛ с обострением", 170_000, 400_000, "", 40, 120),
)
for _icd, _code, _name, _p, _px, _sex, _lo, _hi in CASE_GROUPS:
    TARIFFS += (
        Tariff(_code, _name, "inpatient_case", _p, 0, _sex, _lo, _hi, 1, False),
        Tariff(_code + "X", _name + " с осложнениями", "inpatient_case", _px, 0, _sex, _lo, _hi,
               1, True),
    )

TARIFF_BY_CODE: dict[str, Tariff] = {t.code: t for t in TARIFFS}
CAPITATION_CODE = "CAP01"
SHIFT_MINUTES = 480  # one practitioner's shift
DAY_PATIENT_NORM = 24  # the outpatient norm of patients per practitioner per day


@dataclass(frozen=True, slots=True)
class Drug:
    atc: str
    name: str
    strength_mg: float
    form: str
    max_daily_mg: float
    unit_price: int  # tenge per unit (tablet, dose)
    per_day: int  # units a day in a usual prescription
    indications: tuple[str, ...]  # ICD-10 code prefixes


DRUGS: tuple[Drug, ...] = (
    Drug("A10BA02", "Метформин", 500, "таблетка", 3000, 12, 2, ("E11",)),
    Drug("A10BB09", "Гликлазид", 60, "таблетка", 120, 25, 1, ("E11",)),
    Drug("C08CA01", "Амлодипин", 5, "таблетка", 10, 9, 1, ("I10", "I11", "I20")),
    Drug("C09AA02", "Эналаприл", 10, "таблетка", 40, 6, 2, ("I10", "I11", "I50")),
    Drug("C07AB07", "Бисопролол", 5, "таблетка", 20, 11, 1, ("I10", "I20", "I25", "I48", "I50")),
    Drug("C10AA05", "Аторвастатин", 20, "таблетка", 80, 28, 1, ("E78", "I20", "I25")),
    Drug("R03AC02", "Сальбутамол", 0.1, "доза", 0.8, 8, 4, ("J45", "J44")),
    Drug("J01CA04", "Амоксициллин", 500, "капсула", 3000, 15, 3, ("J01", "J02", "J03", "J18",
                                                               "J20")),
    Drug("A02BC01", "Омепразол", 20, "капсула", 40, 10, 1, ("K21", "K25", "K29")),
    Drug("H03AA01", "Левотироксин", 0.1, "таблетка", 0.2, 7, 1, ("E03",)),
)
DRUG_BY_ATC: dict[str, Drug] = {d.atc: d for d in DRUGS}

# Outpatient diagnoses: (ICD-10, sex, min age, max age, chronic, drug ATC or "", visit weight)
DIAGNOSES: tuple[tuple[str, str, int, int, bool, str, float], ...] = (
    ("J06.9", "", 0, 120, False, "", 6.0),
    ("J02.9", "", 0, 120, False, "J01CA04", 1.5),
    ("J20.9", "", 0, 120, False, "J01CA04", 1.0),
    ("K29.7", "", 10, 120, False, "A02BC01", 1.2),
    ("M54.5", "", 18, 120, False, "", 1.5),
    ("Z00.0", "", 18, 120, False, "", 2.0),
    ("Z00.1", "", 0, 17, False, "", 3.0),
    ("I10", "", 35, 120, True, "C08CA01", 0.0),
    ("I11.9", "", 45, 120, True, "C09AA02", 0.0),
    ("E11.9", "", 35, 120, True, "A10BA02", 0.0),
    ("E78.0", "", 35, 120, True, "C10AA05", 0.0),
    ("I25.1", "", 45, 120, True, "C07AB07", 0.0),
    ("I48", "", 55, 120, True, "C07AB07", 0.0),
    ("J45.9", "", 5, 120, True, "R03AC02", 0.0),
    ("J44.9", "", 40, 120, True, "R03AC02", 0.0),
    ("E03.9", "", 18, 120, True, "H03AA01", 0.0),
)
# Probability of having each chronic condition, by age group (< 35, 35-54, 55+).
CHRONIC_PREVALENCE: dict[str, tuple[float, float, float]] = {
    "I10": (0.0, 0.18, 0.40),
    "I11.9": (0.0, 0.03, 0.08),
    "E11.9": (0.0, 0.06, 0.14),
    "E78.0": (0.0, 0.08, 0.18),
    "I25.1": (0.0, 0.02, 0.10),
    "I48": (0.0, 0.0, 0.04),
    "J45.9": (0.03, 0.03, 0.03),
    "J44.9": (0.0, 0.02, 0.06),
    "E03.9": (0.01, 0.03, 0.04),
}
CHRONIC_SPECIALITY = {
    "I10": "cardiologist", "I11.9": "cardiologist", "I25.1": "cardiologist", "I48": "cardiologist",
    "E11.9": "endocrinologist", "E78.0": "endocrinologist", "E03.9": "endocrinologist",
    "J45.9": "therapist", "J44.9": "therapist",
}

# Lab panels: tariff code → LOINC panel, name, tests (LOINC, name, unit, low, high, decimals)
LAB_PANELS: dict[str, tuple[str, str, tuple[tuple[str, str, str, float, float, int], ...]]] = {
    "B03.001": ("58410-2", "CBC panel", (
        ("718-7", "Hemoglobin", "g/L", 120, 165, 0),
        ("6690-2", "Leukocytes", "10*9/L", 4.0, 9.0, 1),
        ("777-3", "Platelets", "10*9/L", 150, 400, 0),
    )),
    "B03.002": ("24323-8", "Comprehensive metabolic panel", (
        ("2345-7", "Glucose", "mmol/L", 3.9, 6.1, 1),
        ("2160-0", "Creatinine", "umol/L", 62, 115, 0),
        ("1742-6", "ALT", "U/L", 7, 41, 0),
    )),
    "B03.003": ("4548-4", "Hemoglobin A1c", (
        ("4548-4", "Hemoglobin A1c", "%", 4.0, 6.0, 1),
    )),
    "B03.004": ("57698-3", "Lipid panel", (
        ("2093-3", "Cholesterol", "mmol/L", 3.0, 5.2, 1),
        ("13457-7", "LDL cholesterol", "mmol/L", 1.5, 3.3, 1),
    )),
    "B03.005": ("24356-8", "Urinalysis", (
        ("5811-5", "Specific gravity", "{SG}", 1.005, 1.030, 3),
        ("2756-5", "pH", "[pH]", 5.0, 7.5, 1),
    )),
}

DEATH_CAUSES = ("I21.9", "I63.9", "C34.9", "J44.1", "I25.1", "C16.9", "K74.6", "V89.2")
EMIGRATION_COUNTRIES = ("RU", "DE", "UZ", "KG", "TR", "US", "KR")
