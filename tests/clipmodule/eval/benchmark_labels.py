"""Test data: each benchmark's own class identifiers as its distributed copy holds them, in the dataset's label
order (torchvision's: sorted folder names, the class-list file's order, the label numbers), and the pairs of
names that mean the same class where the prompted name and CLIP_benchmark's (or torchvision's) spelling differ.

Written out here (not read from the shipped lists) so that the alignment is checked against the datasets, not
against itself. Cars and FGVC-Aircraft are the exceptions: cars_meta.mat's `class_names` and variants.txt are
word for word OpenAI's lists (the paper used them as they are), so those copies test the exact-name rule only.
"""

from __future__ import annotations

import json
from pathlib import Path


def _words(text: str) -> list[str]:
    return text.split()


EUROSAT = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake"]  # torchvision.datasets.EuroSAT's documented (sorted) folders

RESISC45 = _words("""
airplane airport baseball_diamond basketball_court beach bridge chaparral church circular_farmland cloud
commercial_area dense_residential desert forest freeway golf_course ground_track_field harbor industrial_area
intersection island lake meadow medium_residential mobile_home_park mountain overpass palace parking_lot
railway railway_station rectangular_farmland river roundabout runway sea_ice ship snowberg sparse_residential
stadium storage_tank tennis_court terrace thermal_power_station wetland
""")

CALTECH101 = _words("""
BACKGROUND_Google Faces Faces_easy Leopards Motorbikes accordion airplanes anchor ant barrel bass beaver
binocular bonsai brain brontosaurus buddha butterfly camera cannon car_side ceiling_fan cellphone chair
chandelier cougar_body cougar_face crab crayfish crocodile crocodile_head cup dalmatian dollar_bill dolphin
dragonfly electric_guitar elephant emu euphonium ewer ferry flamingo flamingo_head garfield gerenuk gramophone
grand_piano hawksbill headphone hedgehog helicopter ibis inline_skate joshua_tree kangaroo ketch lamp laptop
llama lobster lotus mandolin mayfly menorah metronome minaret nautilus octopus okapi pagoda panda pigeon pizza
platypus pyramid revolver rhino rooster saxophone schooner scissors scorpion sea_horse snoopy soccer_ball
stapler starfish stegosaurus stop_sign strawberry sunflower tick trilobite umbrella watch water_lilly
wheelchair wild_cat windsor_chair wrench yin_yang
""")

COUNTRY211 = _words("""
AD AE AF AG AI AL AM AO AQ AR AT AU AW AX AZ BA BB BD BE BF BG BH BJ BM BN BO BQ BR BS BT BW BY BZ CA CD CF CH
CI CK CL CM CN CO CR CU CV CW CY CZ DE DK DM DO DZ EC EE EG ES ET FI FJ FK FO FR GA GB GD GE GF GG GH GI GL GM
GP GR GS GT GU GY HK HN HR HT HU ID IE IL IM IN IQ IR IS IT JE JM JO JP KE KG KH KN KP KR KW KY KZ LA LB LC LI
LK LR LT LU LV LY MA MC MD ME MF MG MK ML MM MN MO MQ MR MT MU MV MW MX MY MZ NA NC NG NI NL NO NP NZ OM PA PE
PF PG PH PK PL PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SS SV SX SY SZ TG TH
TJ TL TM TN TO TR TT TW TZ UA UG US UY UZ VA VE VG VI VN VU WS XK YE ZA ZM ZW
""")

# SUN397/ClassName.txt without the "/<letter>/" prefix (the file is sorted: "/j/jail/indoor" before "/j/jail_cell")
SUN397 = _words("""
abbey airplane_cabin airport_terminal alley amphitheater amusement_arcade amusement_park anechoic_chamber
apartment_building/outdoor apse/indoor aquarium aqueduct arch archive arrival_gate/outdoor art_gallery
art_school art_studio assembly_line athletic_field/outdoor atrium/public attic auditorium auto_factory
badlands badminton_court/indoor baggage_claim bakery/shop balcony/exterior balcony/interior ball_pit ballroom
bamboo_forest banquet_hall bar barn barndoor baseball_field basement basilica basketball_court/outdoor
bathroom batters_box bayou bazaar/indoor bazaar/outdoor beach beauty_salon bedroom berth biology_laboratory
bistro/indoor boardwalk boat_deck boathouse bookstore booth/indoor botanical_garden bow_window/indoor
bow_window/outdoor bowling_alley boxing_ring brewery/indoor bridge building_facade bullring burial_chamber
bus_interior butchers_shop butte cabin/outdoor cafeteria campsite campus canal/natural canal/urban candy_store
canyon car_interior/backseat car_interior/frontseat carrousel casino/indoor castle catacomb cathedral/indoor
cathedral/outdoor cavern/indoor cemetery chalet cheese_factory chemistry_lab chicken_coop/indoor
chicken_coop/outdoor childs_room church/indoor church/outdoor classroom clean_room cliff cloister/indoor
closet clothing_store coast cockpit coffee_shop computer_room conference_center conference_room
construction_site control_room control_tower/outdoor corn_field corral corridor cottage_garden courthouse
courtroom courtyard covered_bridge/exterior creek crevasse crosswalk cubicle/office dam delicatessen
dentists_office desert/sand desert/vegetation diner/indoor diner/outdoor dinette/home dinette/vehicle
dining_car dining_room discotheque dock doorway/outdoor dorm_room driveway driving_range/outdoor drugstore
electrical_substation elevator/door elevator/interior elevator_shaft engine_room escalator/indoor excavation
factory/indoor fairway fastfood_restaurant field/cultivated field/wild fire_escape fire_station
firing_range/indoor fishpond florist_shop/indoor food_court forest/broadleaf forest/needleleaf forest_path
forest_road formal_garden fountain galley game_room garage/indoor garbage_dump gas_station gazebo/exterior
general_store/indoor general_store/outdoor gift_shop golf_course greenhouse/indoor greenhouse/outdoor
gymnasium/indoor hangar/indoor hangar/outdoor harbor hayfield heliport herb_garden highway hill home_office
hospital hospital_room hot_spring hot_tub/outdoor hotel/outdoor hotel_room house hunting_lodge/outdoor
ice_cream_parlor ice_floe ice_shelf ice_skating_rink/indoor ice_skating_rink/outdoor iceberg igloo
industrial_area inn/outdoor islet jacuzzi/indoor jail/indoor jail_cell jewelry_shop kasbah kennel/indoor
kennel/outdoor kindergarden_classroom kitchen kitchenette labyrinth/outdoor lake/natural landfill landing_deck
laundromat lecture_room library/indoor library/outdoor lido_deck/outdoor lift_bridge lighthouse
limousine_interior living_room lobby lock_chamber locker_room mansion manufactured_home market/indoor
market/outdoor marsh martial_arts_gym mausoleum medina moat/water monastery/outdoor mosque/indoor
mosque/outdoor motel mountain mountain_snowy movie_theater/indoor museum/indoor music_store music_studio
nuclear_power_plant/outdoor nursery oast_house observatory/outdoor ocean office office_building
oil_refinery/outdoor oilrig operating_room orchard outhouse/outdoor pagoda palace pantry park
parking_garage/indoor parking_garage/outdoor parking_lot parlor pasture patio pavilion pharmacy phone_booth
physics_laboratory picnic_area pilothouse/indoor planetarium/outdoor playground playroom plaza podium/indoor
podium/outdoor pond poolroom/establishment poolroom/home power_plant/outdoor promenade_deck pub/indoor pulpit
putting_green racecourse raceway raft railroad_track rainforest reception recreation_room
residential_neighborhood restaurant restaurant_kitchen restaurant_patio rice_paddy riding_arena river
rock_arch rope_bridge ruin runway sandbar sandbox sauna schoolhouse sea_cliff server_room shed shoe_shop
shopfront shopping_mall/indoor shower skatepark ski_lodge ski_resort ski_slope sky skyscraper slum snowfield
squash_court stable stadium/baseball stadium/football stage/indoor staircase street subway_interior
subway_station/platform supermarket sushi_bar swamp swimming_pool/indoor swimming_pool/outdoor
synagogue/indoor synagogue/outdoor television_studio temple/east_asia temple/south_asia tennis_court/indoor
tennis_court/outdoor tent/outdoor theater/indoor_procenium theater/indoor_seats thriftshop throne_room
ticket_booth toll_plaza topiary_garden tower toyshop track/outdoor train_railway train_station/platform
tree_farm tree_house trench underwater/coral_reef utility_room valley van_interior vegetable_garden veranda
veterinarians_office viaduct videostore village vineyard volcano volleyball_court/indoor
volleyball_court/outdoor waiting_room warehouse/indoor water_tower waterfall/block waterfall/fan
waterfall/plunge watering_hole wave wet_bar wheat_field wind_farm windmill wine_cellar/barrel_storage
wine_cellar/bottle_storage wrestling_ring/indoor yard youth_hostel
""")

# food-101/meta/*.json keys (the reader and torchvision sort them: "cheese_plate" before "cheesecake")
FOOD101 = _words("""
apple_pie baby_back_ribs baklava beef_carpaccio beef_tartare beet_salad beignets bibimbap bread_pudding
breakfast_burrito bruschetta caesar_salad cannoli caprese_salad carrot_cake ceviche cheesecake cheese_plate
chicken_curry chicken_quesadilla chicken_wings chocolate_cake chocolate_mousse churros clam_chowder
club_sandwich crab_cakes creme_brulee croque_madame cup_cakes deviled_eggs donuts dumplings edamame
eggs_benedict escargots falafel filet_mignon fish_and_chips foie_gras french_fries french_onion_soup
french_toast fried_calamari fried_rice frozen_yogurt garlic_bread gnocchi greek_salad grilled_cheese_sandwich
grilled_salmon guacamole gyoza hamburger hot_and_sour_soup hot_dog huevos_rancheros hummus ice_cream lasagna
lobster_bisque lobster_roll_sandwich macaroni_and_cheese macarons miso_soup mussels nachos omelette
onion_rings oysters pad_thai paella pancakes panna_cotta peking_duck pho pizza pork_chop poutine prime_rib
pulled_pork_sandwich ramen ravioli red_velvet_cake risotto samosa sashimi scallops seaweed_salad
shrimp_and_grits spaghetti_bolognese spaghetti_carbonara spring_rolls steak strawberry_shortcake sushi tacos
takoyaki tiramisu tuna_tartare waffles
""")

DTD = _words("""
banded blotchy braided bubbly bumpy chequered cobwebbed cracked crosshatched crystalline dotted fibrous
flecked freckled frilly gauzy grid grooved honeycombed interlaced knitted lacelike lined marbled matted meshed
paisley perforated pitted pleated polka-dotted porous potholed scaly smeared spiralled sprinkled stained
stratified striped studded swirly veined waffled woven wrinkled zigzagged
""")

# oxford-iiit-pet annotations: the image-id prefix of class ids 1..37
PETS = _words("""
Abyssinian american_bulldog american_pit_bull_terrier basset_hound beagle Bengal Birman Bombay boxer
British_Shorthair chihuahua Egyptian_Mau english_cocker_spaniel english_setter german_shorthaired
great_pyrenees havanese japanese_chin keeshond leonberger Maine_Coon miniature_pinscher newfoundland Persian
pomeranian pug Ragdoll Russian_Blue saint_bernard samoyed scottish_terrier shiba_inu Siamese Sphynx
staffordshire_bull_terrier wheaten_terrier yorkshire_terrier
""")

CIFAR10 = _words("airplane automobile bird cat deer dog frog horse ship truck")
CIFAR100 = _words("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
""")
STL10 = _words("airplane bird car cat deer dog horse monkey ship truck")
VOC = _words("""
aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike person pottedplant
sheep sofa train tvmonitor
""")


def shipped(source: str, name: str) -> list:
    """A list as the shipped data file has it (Cars' and Aircraft's raw lists, see the module docstring)."""
    folder = Path(__file__).resolve().parents[3] / "clipmodule" / "assets" / "benchmarks"
    return json.loads((folder / f"{source}.json").read_text(encoding="utf-8"))[name]


# OpenAI's name ~ CLIP_benchmark's (or torchvision's) name of the same class, where the spellings differ.
SAME_CLASS = {
    # SVHN: OpenAI has no list, so the reader's digits are prompted; CLIP_benchmark spells them in words
    *zip("0123456789", ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]),
    # Flowers-102: torchvision's English names (label order) where OpenAI's/CLIP_benchmark's differ
    ("pink and yellow dahlia", "pink-yellow dahlia?"),
    ("air plant", "ball moss"),  # Tillandsia recurvata, an air plant
}
