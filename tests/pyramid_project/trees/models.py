"""The site's models and its per-request SQLAlchemy session (the Pyramid cookiecutter's)."""

import uuid

import zope.sqlalchemy
from sqlalchemy import Column, Float, ForeignKey, Integer, String, engine_from_config
from sqlalchemy.orm import declarative_base, relationship, sessionmaker

Base = declarative_base()


class Customer(Base):
    __tablename__ = "customer"
    id = Column(Integer, primary_key=True)
    phone = Column(String, nullable=False)


class Delivery(Base):
    __tablename__ = "delivery"
    id = Column(Integer, primary_key=True)
    uuid = Column(String, nullable=False, default=lambda: str(uuid.uuid4()))
    customer_id = Column(Integer, ForeignKey("customer.id"), nullable=False)
    customer = relationship(Customer)


class SentSMS(Base):
    __tablename__ = "sent_sms"
    id = Column(Integer, primary_key=True)
    to = Column(String, nullable=False)
    body = Column(String, nullable=False)


class ConversionRate(Base):
    __tablename__ = "conversion_rate"
    id = Column(Integer, primary_key=True)
    currency = Column(String, nullable=False)
    rate = Column(Float, nullable=False)


class Note(Base):
    __tablename__ = "note"
    id = Column(Integer, primary_key=True)
    text = Column(String, nullable=False)


def get_tm_session(session_factory, transaction_manager):
    dbsession = session_factory()
    zope.sqlalchemy.register(dbsession, transaction_manager=transaction_manager)
    return dbsession


def includeme(config):
    settings = config.get_settings()
    engine = engine_from_config(settings, "sqlalchemy.")
    Base.metadata.create_all(engine)
    session_factory = sessionmaker(bind=engine)
    config.registry["dbsession_factory"] = session_factory
    config.add_request_method(
        lambda r: get_tm_session(session_factory, r.tm), "dbsession", reify=True)
