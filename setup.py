"""funnel-lakehouse: the pipeline package. Dataflow workers install it from here."""

import setuptools

setuptools.setup(
    name="funnel-lakehouse",
    version="0.1.0",
    description="Customer funnel lakehouse on Apache Beam: raw -> bronze -> silver -> gold",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(
        include=[
            "pipelines",
            "pipelines.*",
            "transforms",
            "transforms.*",
            "schemas",
            "schemas.*",
            "reporting",
            "reporting.*",
            "simulator",
            "simulator.*",
        ]
    ),
    package_data={"schemas": ["funnels.yaml"]},  # the default funnel definitions
    entry_points={"console_scripts": ["funnel = pipelines.cli:main"]},
    install_requires=[
        "apache-beam[gcp,aws]==2.77.0",  # aws: Beam's S3 filesystem (a lake on S3)
        "pyarrow==25.0.1",
        "fastavro==1.13.1",
        "orjson==3.13.0",
        "msgspec==0.22.0",
        "mmh3==5.3.1",
        "google-cloud-bigquery==3.47.0",
        "google-cloud-pubsub==2.44.0",
        "matplotlib==3.11.2",
        "scipy==1.17.1",
        "plotly==7.1.0",
        "deltalake==1.6.6",
        "tenacity==9.1.4",
        "PyYAML==6.0.4",  # funnel definitions (schemas/funnels.yaml)
    ],
)
